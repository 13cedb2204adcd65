"""The `emt` command line: bad configuration exits 2 with a message naming the field; synth writes a corpus."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_report_and_export_of_a_missing_manifest_are_one_line(tmp_path):
    missing = str(tmp_path / "runs" / "nope" / "manifest.parquet")
    for args in (["report", missing], ["export", missing, str(tmp_path / "shards")]):
        done, seconds = _emt(*args)
        assert done.returncode == 2 and seconds < 10, (seconds, done.stderr)
        assert done.stderr.splitlines() == [f"emt {args[0]}: MANIFEST_URI {missing}: no such manifest "
                                            "(a curation run's RUN/manifest.parquet)"], done.stderr
        assert done.stdout == ""
    # A manifest without its sidecar (not a finished run's) is named too, not a traceback about manifest.json.
    (tmp_path / "manifest.parquet").write_bytes(b"PAR1")
    done, _ = _emt("report", str(tmp_path / "manifest.parquet"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "manifest.json beside it" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "shards").exists()


# The `curate` extra's import names: absent, the interpreter is the base install's (consumers reading manifests).
CURATE_EXTRA = ["torch", "torchvision", "transformers", "tokenizers", "huggingface_hub", "safetensors", "open_clip",
                "faiss", "prefect", "fastapi", "ray", "mlflow", "pandas", "av", "matplotlib", "sklearn", "scipy",
                "psutil", "tqdm", "num2words", "peft"]


def _base_install_emt(*args: str) -> subprocess.CompletedProcess:
    """`emt ARGS` as on the base install: each module of the curate extra is absent (None in sys.modules, so
    importing it raises ModuleNotFoundError and importlib finds no spec)."""
    code = (f"import sys\nfor name in {CURATE_EXTRA!r}: sys.modules[name] = None\n"
            f"from flows.cli import main\nsys.exit(main({list(args)!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})  # one help line per command


def test_base_install_help_works_and_names_the_extra_each_command_needs():
    done = _base_install_emt("--help")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    needs = "needs the curate extra: pip install 'embodied-midtrain[curate]'"
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("    ")}
    assert set(lines) == {"synth", "survey", "curate", "report", "export", "demo", "midtrain", "finetune",
                          "pipeline", "ablation", "stack"}
    assert [c for c, line in lines.items() if needs not in line] == ["synth"]  # the base install's own command
    for args in (["stack", "--help"], ["export", "m.parquet", "out"], ["curate", "--config", "c.yaml"]):
        done = _base_install_emt(*args)
        assert "Traceback" not in done.stderr, done.stderr
    done = _base_install_emt("stack", "up")
    assert done.returncode == 2 and done.stderr == f"emt stack: {needs} (psutil is missing)\n"


def test_help_shows_each_options_type_and_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    shown = {}
    for command in ("synth", "export", "stack", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown[command] = capsys.readouterr().out
    assert all("VALUE" not in out for out in shown.values()), shown
    assert "[--samples-per-source INT]" in shown["synth"] and "(default: 400)" in shown["synth"]
    assert "--preset {standard,shortcut}" in shown["synth"] and "--mismatched-sources true|false" in shown["synth"]
    assert "--executor {threads,ray}" in shown["export"] and "--ray-cpus NUMBER" in shown["export"]
    assert "--ray-address TEXT" in shown["export"] and "(default: none)" in shown["export"]
    assert "--s3-secret SECRET" in shown["stack"] and "--prefect-port INT" in shown["stack"]
    assert "emt-stack-secret" not in shown["stack"]  # a secret's default is never printed
