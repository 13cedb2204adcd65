"""`emt ablation`: the example config validates; a bad field, or neither / both of --config and --demo, exits 2 with
one line naming the problem, before any training starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_demo_options_reach_the_demo(tmp_path, capsys, monkeypatch):
    import flows.demo_ablation

    def stub(**options):  # the demo is not run: the options it would get are the answer
        raise ValueError(f"would run toyworld={options['toyworld']} without={options['without']}")

    monkeypatch.setattr(flows.demo_ablation, "run_ablation_demo", stub)
    assert main(["ablation", "--demo", "--toyworld", "--without", "spatial", "--without", "charts"]) == 2
    assert "would run toyworld=True without=['spatial', 'charts']" in capsys.readouterr().err
    assert main(["ablation", "--demo"]) == 2
    assert "would run toyworld=False without=[]" in capsys.readouterr().err


def test_without_is_for_the_demo_and_names_a_pool_source(tmp_path, capsys):
    from core.settings import SourceSpec
    from flows.demo_ablation import _pool_without

    config = tmp_path / "ablation.yaml"
    config.write_text("model: /m\n")
    assert main(["ablation", "--config", str(config), "--without", "spatial"]) == 2
    assert "--without applies to --demo only" in capsys.readouterr().err
    pool = [SourceSpec(name=n, format="webdataset", uri=f"/pool/{n}") for n in ("photos", "spatial")]
    assert [s.name for s in _pool_without(pool, ["spatial"])] == ["photos"]
    for without, message in ((["nope"], "no pool source named nope (the pool has photos, spatial)"),
                             (["photos", "spatial"], "leaves no pool source")):
        with pytest.raises(ValueError, match=re.escape(message)):
            _pool_without(pool, without)
