"""The ``pipeline`` flow end to end (curate -> midtrain -> finetune) on the tiny corpus: locally on the SQLite
store, and with the corpus and every output on the S3 test server tracked by a real `mlflow server`. What the runs
recorded is read back through the MLflow client; a finished pipeline is not redone."""

from __future__ import annotations

import io
import json
import time

import mlflow
import pandas as pd
import pytest
from PIL import Image
from prefect.artifacts import Artifact

from core.manifest import read_sidecar
from core.storage import exists, join
from flows.pipeline import pipeline
from infra.services import mlflow_server
from training.provenance import CODE_VERSION, NOTE, code_tags
from training.recording import MLFLOW_PARENT, PARENT, lineage
from training.tracking import dataset_digest, robot_digest
from training.vla import load_vla

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]


def _check_run_tree(report, params, storage, client: mlflow.MlflowClient) -> None:
    """What the three MLflow runs must carry, whatever the store."""
    cur, mid, ft = report.curate, report.midtrain, report.finetune
    assert cur.run_id == mid.run_id == ft.run_id  # one run id through the stages
    chain = lineage(ft.mlflow_run_id, client.tracking_uri)
    assert [(c["kind"], c["run_id"]) for c in chain] == [
        ("finetune", ft.mlflow_run_id),
        ("midtrain", mid.mlflow_run_id),
        ("curation", cur.mlflow_run_id),
    ]
    assert chain[2]["manifest_uri"] == cur.manifest_uri

    mid_run = client.get_run(mid.mlflow_run_id)
    assert mid_run.data.tags[PARENT] == cur.mlflow_run_id == mid_run.data.tags["lineage.curation_run_id"]
    assert mid_run.data.params["train.steps"] == "4" and mid_run.data.params["manifest_uri"] == cur.manifest_uri
    (manifest_input,) = mid_run.inputs.dataset_inputs
    sha = read_sidecar(cur.manifest_uri, storage)["content_sha256"]
    assert manifest_input.dataset.digest == dataset_digest(cur.manifest_uri, sha)
    assert cur.manifest_uri in manifest_input.dataset.source
    losses = client.get_metric_history(mid.mlflow_run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]

    ft_tags = client.get_run(ft.mlflow_run_id).data.tags
    assert ft_tags[PARENT] == mid.mlflow_run_id == ft_tags["lineage.midtrain_run_id"]
    assert ft_tags["lineage.base_model"] == f"emt-vlm/{mid.model_version}"
    assert ft_tags["lineage.curation_run_id"] == cur.mlflow_run_id
    assert ft_tags["lineage.manifest_uri"] == cur.manifest_uri
    robot = {d.dataset.name: d.dataset.digest for d in client.get_run(ft.mlflow_run_id).inputs.dataset_inputs}
    sources = params.finetune.robot.sources
    assert robot == {s.name: dataset_digest(s.uri, robot_digest(s.uri, storage)) for s in sources}
    for name in ("eval/l1/arm", "eval/gripper_accuracy", "eval/loss"):  # the held-out curve: steps 2 and 4
        assert [m.step for m in client.get_metric_history(ft.mlflow_run_id, name)] == [2, 4]
    assert ft.eval_metrics()["l1/arm"] == ft.metrics["eval/l1/arm"] >= 0

    for stage, name in ((mid, "emt-vlm"), (ft, "emt-vla")):
        version = client.get_model_version(name, str(stage.model_version))
        assert version.run_id == stage.mlflow_run_id and version.source == f"runs:/{stage.mlflow_run_id}/model"
        assert client.get_run(stage.mlflow_run_id).data.tags["checkpoint_uri"].startswith(stage.run_uri)
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(ft.mlflow_run_id, "model")}  # a pyfunc model
    _check_links(report, client)


def _check_links(report, client: mlflow.MlflowClient) -> None:
    """MLflow's own nesting and descriptions, the code version, report.json, and the curation's real duration."""
    cur, mid, ft = report.curate, report.midtrain, report.finetune
    runs = {stage: client.get_run(r.mlflow_run_id) for stage, r in (("cur", cur), ("mid", mid), ("ft", ft))}
    assert runs["mid"].data.tags[MLFLOW_PARENT] == cur.mlflow_run_id
    assert runs["ft"].data.tags[MLFLOW_PARENT] == mid.mlflow_run_id
    note = runs["ft"].data.tags[NOTE]
    for stage in ("cur", "mid", "ft"):
        info = runs[stage].info
        assert f"(#/experiments/{info.experiment_id}/runs/{info.run_id})" in note
        assert runs[stage].data.tags[CODE_VERSION] == code_tags()[CODE_VERSION]
    assert f"(#/models/emt-vlm/versions/{mid.model_version})" in note
    assert f'mlflow.pyfunc.load_model("models:/emt-vla/{ft.model_version}")' in note
    assert runs["cur"].info.experiment_id != runs["mid"].info.experiment_id == runs["ft"].info.experiment_id
    for stage in (mid, ft):
        with open(client.download_artifacts(stage.mlflow_run_id, "report.json")) as f:
            logged = json.load(f)
        assert logged["mlflow_run_id"] == stage.mlflow_run_id and logged["model_version"] == stage.model_version
    info = runs["cur"].info
    assert info.end_time - info.start_time >= cur.seconds * 1000  # the run's work, not the 0.1 s of recording it


def test_pipeline_end_to_end_locally(local_pipeline, mlflow_store):
    params, report = local_pipeline
    _check_run_tree(report, params, None, mlflow.MlflowClient(mlflow_store))
    vla = load_vla(report.finetune.model_uri)
    actions = vla.predict_action(Image.new("RGB", (32, 32)), "pick up the red block")
    assert actions.shape == (4, vla.spec.action_dim)
    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, "PNG")
    registered = mlflow.pyfunc.load_model(f"models:/emt-vla/{report.finetune.model_version}")
    served = registered.predict(pd.DataFrame({"image": [png.getvalue()], "instruction": ["pick up the red block"]}))
    assert served.shape == (1, 4, vla.spec.action_dim)
    assert (served[0] == actions).all()  # the registered MLflow model is the VLA
    summary = Artifact.get("finetune-summary")
    assert report.finetune.mlflow_run_id in summary.data and "emt-vla" in summary.data
    assert report.midtrain.mlflow_run_id in Artifact.get("pipeline-summary").data


def test_a_finished_pipeline_is_not_redone(local_pipeline, mlflow_store):
    params, first = local_pipeline
    client = mlflow.MlflowClient(mlflow_store)
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    start = time.perf_counter()
    again = pipeline(params)
    assert again == first
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before
    assert time.perf_counter() - start < 60  # no embedding, no training


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def test_pipeline_on_s3_tracked_by_a_server(
    s3, s3_corpus, tiny_backbone, tiny_vlm_dir, tracking_server, make_pipeline_params
):
    out = s3.make_bucket("pipeline")
    params = make_pipeline_params(
        s3_corpus, tiny_backbone, tiny_vlm_dir, out, run_name="s3run", storage=s3.storage, tracking_uri=tracking_server
    )
    report = pipeline(params)
    for stage in (report.midtrain, report.finetune):
        assert stage.model_uri.startswith(f"{out}/") and stage.tracking_uri == tracking_server
        assert exists(join(stage.run_uri, "_SUCCESS"), s3.storage)
    assert exists(join(report.finetune.model_uri, "vla.json"), s3.storage)
    _check_run_tree(report, params, s3.storage, mlflow.MlflowClient(tracking_server))
    # The summary links the curation's run on the server, as it links the other two stages'.
    curation = mlflow.MlflowClient(tracking_server).get_run(report.curate.mlflow_run_id).info
    assert (f"({tracking_server}/#/experiments/{curation.experiment_id}/runs/{curation.run_id})"
            in Artifact.get("pipeline-summary").data)
