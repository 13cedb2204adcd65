"""`emt ablation`: the example config validates; a bad field, or neither / both of --config and --demo, exits 2 with
one line naming the problem, before any training starts."""

from __future__ import annotations

from pathlib import Path

from core.settings import load_config
from flows.ablation_params import AblationParams
from flows.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_validates():
    params = load_config(AblationParams, str(ROOT / "deploy" / "ablation.example.yaml"))
    assert params.arms == ["none", "random", "curated"] and params.seeds == 3


def test_bad_field_is_named(tmp_path, capsys):
    config = tmp_path / "ablation.yaml"
    config.write_text("model: /m\nmanifest_uri: /x.parquet\noutput_uri: /out\n"
                      "robot: {sources: [{name: r, format: lerobot, uri: /y}]}\nfinetune: {eval_every: 0}\n")
    assert main(["ablation", "--config", str(config)]) == 2
    assert "finetune.eval_every" in capsys.readouterr().err


def test_config_or_demo_exactly_one(capsys):
    assert main(["ablation"]) == 2
    assert "exactly one of --config FILE or --demo" in capsys.readouterr().err


def test_executor_option_overrides_the_config(tmp_path, capsys, monkeypatch):
    import flows.ablation

    def stub(params: AblationParams):  # the flow is not run: the parameters it would get are the answer
        raise ValueError(f"would run with executor {params.executor}")

    monkeypatch.setattr(flows.ablation, "ablation", stub)
    config = tmp_path / "ablation.yaml"
    config.write_text("model: /m\nmanifest_uri: /x.parquet\noutput_uri: /out\nexecutor: local\n"
                      "robot: {sources: [{name: r, format: lerobot, uri: /y}]}\n")
    assert main(["ablation", "--config", str(config), "--executor", "ray"]) == 2
    assert "would run with executor ray" in capsys.readouterr().err
    assert main(["ablation", "--config", str(config)]) == 2
    assert "would run with executor local" in capsys.readouterr().err
