"""The ``midtrain`` flow alone and its command: bad parameters are refused before anything starts, naming the
field; a run from the command line (on the local pipeline's manifest) is tracked with its lineage; a finished run
is returned, not redone, and refused for other parameters."""

from __future__ import annotations

import mlflow
import pyarrow.compute as pc
import pytest
import yaml

from core.manifest import read_manifest, read_sidecar, write_manifest
from core.settings import ConfigError, parse_config
from flows.cli import main
from flows.midtrain import midtrain
from flows.training_params import MidtrainParams
from tasks.run_folder import RunRefused

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

TINY_TRAIN = {"steps": 2, "batch_size": 4, "log_every": 1, "shuffle_buffer": 16}


def _run_count(uri: str) -> int:
    client = mlflow.MlflowClient(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


@pytest.fixture()
def base(local_pipeline, tiny_vlm_dir, tmp_path) -> dict:
    _, report = local_pipeline
    return {
        "model": tiny_vlm_dir,
        "manifest_uri": report.curate.manifest_uri,
        "output_uri": str(tmp_path / "midtrain"),
        "train": TINY_TRAIN,
    }


@pytest.fixture()
def empty_manifest(local_pipeline, tmp_path) -> str:
    """The pipeline's manifest with nothing selected."""
    source = local_pipeline[1].curate.manifest_uri
    table = read_manifest(source)
    uri = str(tmp_path / "empty" / "manifest.parquet")
    write_manifest(uri, [table.set_column(6, "selected", pc.equal(table["rank"], -1))], read_sidecar(source))
    return uri


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"manifest_uri": "/nonexistent/manifest.parquet"}, "manifest_uri"),
        ({"manifest_uri": "EMPTY"}, "manifest_uri"),
        ({"model": "/nonexistent/vlm"}, "model"),
        ({"curation_run_id": "0" * 32}, "curation_run_id"),
    ],
)
def test_bad_parameters_are_refused_before_training(base, empty_manifest, mlflow_store, change, field):
    change = {k: empty_manifest if v == "EMPTY" else v for k, v in change.items()}
    before = _run_count(mlflow_store)
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        midtrain(MidtrainParams.model_validate({**base, **change}))
    assert _run_count(mlflow_store) == before  # no MLflow run was started


def test_mlflow_cannot_be_turned_off(base):
    with pytest.raises(ConfigError, match="mlflow: .*always tracked"):
        parse_config(MidtrainParams, {**base, "mlflow": {"enabled": False}})


def test_command_line_run_then_not_redone(base, local_pipeline, tmp_path, capsys, mlflow_store):
    config = tmp_path / "midtrain.yaml"
    config.write_text(yaml.safe_dump({**base, "run_name": "cli"}))
    assert main(["midtrain", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    curation = local_pipeline[1].curate.mlflow_run_id
    assert f"lineage.curation_run_id = {curation}" in out  # found by the manifest URI
    params = MidtrainParams.model_validate({**base, "run_name": "cli"})
    first = midtrain(params)
    client = mlflow.MlflowClient(mlflow_store)
    assert client.get_run(first.mlflow_run_id).data.tags["lineage.parent_run_id"] == curation
    runs = _run_count(mlflow_store)
    assert midtrain(params) == first and _run_count(mlflow_store) == runs  # returned, not redone
    with pytest.raises(RunRefused, match="train"):
        midtrain(params.model_copy(update={"train": params.train.model_copy(update={"lr": 1e-3})}))


def test_command_line_bad_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"model": "m", "output_uri": str(tmp_path), "train": {"steps": 0}}))
    assert main(["midtrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "manifest_uri" in err and "train.steps" in err and "Traceback" not in err


@pytest.mark.usefixtures("ray_local")
def test_two_workers_train_on_ray_train(base, mlflow_store):
    params = MidtrainParams.model_validate({**base, "run_name": "ddp", "workers": 2})
    report = midtrain(params)
    assert report.steps == 2
    history = mlflow.MlflowClient(mlflow_store).get_metric_history(report.mlflow_run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2]  # logged once per step: by rank zero only
