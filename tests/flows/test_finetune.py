"""The ``finetune`` flow alone: bad parameters are refused before anything starts, naming the field (the data-level
checks — action size, gripper index, chunk length, split — are the recipe's, tested with it)."""

from __future__ import annotations

import mlflow
import pytest

from core.settings import ConfigError
from flows.finetune import finetune
from flows.training_params import FinetuneParams

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
