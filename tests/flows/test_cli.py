"""The `emt` command line: bad configuration exits 2 with a message naming the field; synth writes a corpus."""

from __future__ import annotations

from flows.cli import main
from synth import load_corpus_info


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
