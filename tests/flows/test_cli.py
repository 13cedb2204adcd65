"""The `emt` command line: bad configuration exits 2 with a message naming the field; synth writes a corpus."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from flows.cli import main
from infra.s3 import free_port
from synth import load_corpus_info

ROOT = Path(__file__).resolve().parents[2]


def test_synth_writes_a_corpus(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                str(tmp_path),
                "--samples-per-source",
                "5",
                "--shard-size",
                "5",
                "--robot-episodes",
                "2",
                "--frames-per-episode",
                "3",
            ]
        )
        == 0
    )
    assert load_corpus_info(str(tmp_path)).counts["photos"] == 5
    assert str(tmp_path) in capsys.readouterr().out


def test_bad_option_names_the_field(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--samples-per-source", "0"]) == 2
    assert "samples_per_source" in capsys.readouterr().err


def test_bad_curate_config_names_the_field(tmp_path, capsys):
    config = tmp_path / "curate.yaml"
    config.write_text(
        "pool: [{name: a, format: tar, uri: /x}]\nrobot: [{name: r, format: lerobot, uri: /y}]\n"
        "backbone: {kind: open_clip, model: ViT-B-32}\nk: 5\noutput_uri: /out\n"
    )
    assert main(["curate", "--config", str(config)]) == 2
    assert "pool.0.format" in capsys.readouterr().err


def test_missing_storage_credentials_is_a_clear_error(s3, tmp_path, monkeypatch, capsys):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    config = tmp_path / "storage.yaml"
    config.write_text(f"storage: {{endpoint_url: '{s3.storage.endpoint_url}'}}\n")
    assert main(["synth", "s3://nowhere/corpus", "--config", str(config), "--samples-per-source", "2"]) == 2
    assert "object storage: Unable to locate credentials" in capsys.readouterr().err


def _emt(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True)
    return done, time.perf_counter() - start


def _curate_config(tmp_path: Path, extra: str = "", *, pool_format: str = "webdataset") -> str:
    config = tmp_path / "curate.yaml"
    config.write_text(
        f"pool: [{{name: a, format: {pool_format}, uri: /x}}]\nrobot: [{{name: r, format: lerobot, uri: /y}}]\n"
        f"backbone: {{kind: open_clip, model: ViT-B-32}}\nk: 5\n{extra}"
    )
    return str(config)


def test_bad_curate_config_is_one_fast_line(tmp_path):
    done, seconds = _emt("curate", "--config", _curate_config(tmp_path, f"output_uri: {tmp_path}/out\n",
                                                              pool_format="tar"))
    assert done.returncode == 2 and seconds < 5, (seconds, done.stderr)
    assert len(done.stderr.splitlines()) == 1 and "pool.0.format" in done.stderr


def test_unreachable_storage_is_one_fast_line(tmp_path):
    storage = f"storage: {{endpoint_url: 'http://127.0.0.1:{free_port()}', key: k, secret: s}}\n"
    done, seconds = _emt("curate", "--config", _curate_config(tmp_path, storage + "output_uri: s3://b/runs\n"))
    assert done.returncode == 2 and seconds < 15, (seconds, done.stderr)  # not the ~40 s of retries
    assert len(done.stderr.splitlines()) == 1 and "output_uri (s3://b/runs)" in done.stderr
    assert "endpoint" in done.stderr


def test_every_bad_field_is_on_one_line(tmp_path, capsys):
    config = _curate_config(tmp_path, f"output_uri: {tmp_path}/out\nfraction: 2\nsampels: 3\n")
    assert main(["curate", "--config", config]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "fraction" in err and "sampels" in err


def test_prefect_ephemeral_api_gets_time_to_start(tmp_path, monkeypatch, capsys):
    """A loaded machine took longer than Prefect's 20 s default to start the ephemeral API; a user's value wins."""
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    main(["synth", str(tmp_path), "--samples-per-source", "0"])
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "300"
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "42")
    main(["synth", str(tmp_path), "--samples-per-source", "0"])
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "42"
