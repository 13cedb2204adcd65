"""The ``finetune`` flow alone: bad parameters are refused before anything starts, naming the field (the data-level
checks — action size, gripper index, chunk length, split — are the recipe's, tested with it)."""

from __future__ import annotations

import mlflow
import pytest

from core.settings import ConfigError
from flows.finetune import finetune
from flows.training_params import FinetuneParams
from synth.lerobot import CAMERA
from synth.toyworld import write_toyworld_dataset

pytestmark = pytest.mark.usefixtures("prefect_api")


def _run_count(uri: str) -> int:
    client = mlflow.MlflowClient(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


@pytest.fixture()
def base(local_corpus, tiny_vlm_dir, tmp_path) -> dict:
    return {
        "model": tiny_vlm_dir,
        "output_uri": str(tmp_path / "finetune"),
        "robot": {"sources": [s.model_dump() for s in local_corpus.robot]},
        "train": {"steps": 2, "batch_size": 4},
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": "/nonexistent/midtrain/model"}, "model"),
        ({"midtrain_run_id": "0" * 32}, "midtrain_run_id"),
        ({"robot.sources.1.uri": "/nonexistent/robot"}, r"robot\.sources\.1\.uri"),
    ],
)
def test_bad_parameters_are_refused_before_training(base, mlflow_store, change, field):
    given = dict(base)
    if "robot.sources.1.uri" in change:
        sources = [dict(s) for s in base["robot"]["sources"]]
        sources[1]["uri"] = change.pop("robot.sources.1.uri")
        given["robot"] = {"sources": sources}
    before = _run_count(mlflow_store)
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        finetune(FinetuneParams.model_validate({**given, **change}))
    assert _run_count(mlflow_store) == before  # no MLflow run was started


def test_a_robot_source_must_be_lerobot(base):
    sources = [{**s, "format": "parquet"} for s in base["robot"]["sources"]]
    with pytest.raises(ValueError, match="lerobot"):
        FinetuneParams.model_validate({**base, "robot": {"sources": sources}})


def test_closed_loop_evaluation_is_logged_to_the_mlflow_run(tiny_vlm_dir, tmp_path, mlflow_store):
    data = str(tmp_path / "toyworld")
    write_toyworld_dataset(data, range(3), size=32, episodes_per_file=3)
    params = FinetuneParams.model_validate({
        "model": tiny_vlm_dir, "output_uri": str(tmp_path / "finetune"),
        "robot": {"sources": [{"name": "toyworld", "format": "lerobot", "uri": data, "image_key": CAMERA}],
                  "heldout_fraction": 0.34},
        "train": {"steps": 2, "batch_size": 4},
        "closed_loop": {"episodes": 4, "image_size": 32, "max_steps": 4, "gif_episodes": 2}})
    report = finetune(params)
    rate = report.metrics["closed_loop/success_rate"]
    assert 0.0 <= report.metrics["closed_loop/success_low"] <= rate <= report.metrics["closed_loop/success_high"] <= 1
    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(report.mlflow_run_id)
    assert run.data.metrics["closed_loop/success_rate"] == rate and run.data.metrics["closed_loop/episodes"] == 4
    assert "eval/loss" in report.metrics  # beside the held-out action loss
    logged = {a.path for a in client.list_artifacts(report.mlflow_run_id, "closed_loop")}
    assert logged == {"closed_loop/result.json", "closed_loop/rollouts.gif"}
    gif = client.download_artifacts(report.mlflow_run_id, "closed_loop/rollouts.gif", str(tmp_path / "dl"))
    with open(gif, "rb") as f:
        assert f.read(6) == b"GIF89a"
