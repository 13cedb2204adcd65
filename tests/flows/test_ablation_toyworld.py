"""The ablation on toy-world robot data with closed-loop rollouts and the sources arm (1 seed, a few steps): every
fine-tuning child run carries the closed-loop metrics and GIF, each arm's row its success rate with a Wilson
interval, and the sources arm mid-trained on the best sources by mean score."""

from __future__ import annotations

import mlflow
import pytest

from core.manifest import read_sidecar
from flows.ablation import ablation
from flows.ablation_params import AblationParams
from synth.lerobot import CAMERA
from synth.toyworld import write_toyworld_dataset
from tests.training.conftest import make_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

TINY = {"batch_size": 4, "log_every": 1, "shuffle_buffer": 4, "lr": 1e-3}


def test_closed_loop_and_sources_arm_in_the_ablation(local_corpus, tiny_vlm_dir, tmp_path, mlflow_store):
    data = str(tmp_path / "toyworld")
    write_toyworld_dataset(data, range(3), size=32, episodes_per_file=3)
    manifest = make_manifest(str(tmp_path / "curated" / "manifest.parquet"), local_corpus, per_source=2)
    params = AblationParams(
        model=tiny_vlm_dir, manifest_uri=manifest, output_uri=str(tmp_path / "runs"), run_name="toy", seeds=1,
        arms=["none", "sources", "curated"], top_sources=1,
        robot={"sources": [{"name": "toyworld", "format": "lerobot", "uri": data, "image_key": CAMERA}],
               "heldout_fraction": 0.34},
        head={"hidden_dim": 16}, midtrain={**TINY, "steps": 1}, finetune={**TINY, "steps": 2, "eval_every": 2},
        closed_loop={"episodes": 2, "image_size": 32, "max_steps": 3, "gif_episodes": 1}, executor="local")
    report = ablation(params)
    rows = {r["arm"]: r for r in report.arms}
    assert set(rows) == {"none", "sources", "curated"}
    for row in rows.values():
        assert 0.0 <= row["success_low"] <= row["success_rate"] <= row["success_high"] <= 1.0
    assert "Closed loop:" in report.verdict and report.budget["closed-loop episodes per unit"] == 2
    client = mlflow.MlflowClient(mlflow_store)
    for unit in report.units:
        run = client.get_run(unit["finetune_run_id"])
        assert run.data.metrics["closed_loop/success_rate"] == unit["closed_loop"]["rate"]
        logged = {a.path for a in client.list_artifacts(unit["finetune_run_id"], "closed_loop")}
        assert "closed_loop/rollouts.gif" in logged
    sidecar = read_sidecar(f"{report.run_uri}/arms/sources/seed0/manifest.parquet")
    assert sidecar["selection"] == "sources" and len(sidecar["sources"]) == 1
