"""Training runs in MLflow — the Tracker, dataset inputs, registered model versions and the lineage walk — read
back through the MLflow client, on the SQLite store and on a real `mlflow server`."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pyarrow as pa
import pytest

from core.manifest import write_manifest
from core.settings import MlflowConfig
from infra.services import mlflow_server
from training.provenance import CODE_VERSION, NOTE, code_tags
from training.recording import MLFLOW_PARENT, PARENT, describe_run, find_run, lineage, record_run
from training.tracking import (
    dataset_digest,
    log_manifest_input,
    log_model,
    log_robot_inputs,
    robot_digest,
    training_run,
)


@pytest.fixture(scope="module", params=["sqlite", "server"])
def tracking_uri(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield os.environ["MLFLOW_TRACKING_URI"]
        return
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("curate") / "manifest.parquet")
    rows = pa.table(
        {
            "sample_id": ["a/0", "a/1"],
            "source": ["a", "a"],
            "shard_uri": ["s", "s"],
            "key": ["0", "1"],
            "score": pa.array([0.9, 0.1], pa.float32()),
            "rank": [0, 1],
            "selected": [True, False],
        }
    )
    write_manifest(uri, [rows], {"run_id": "c1"})
    return uri


def test_tracker_logs_the_config_and_metrics_and_pickles(tracking_uri):
    config = MlflowConfig(tracking_uri=tracking_uri, experiment="emt-test")
    with training_run(config, run_name="t1", kind="midtrain", tags={"run_uri": "/runs/t1"}) as tracker:
        tracker.log_params({"model": "m", "train": {"lr": 5e-5, "steps": 3}, "sources": [{"name": "r"}]})
        for step in (1, 2, 3):
            tracker.log_metrics({"loss": 1.0 / step, "lr": 1e-5}, step=step)
        clone = pickle.loads(pickle.dumps(tracker))  # what a Ray Train rank zero receives
        clone.log_metrics({"loss": 0.25}, step=4)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "t1"
    assert run.data.params == {"model": "m", "train.lr": "5e-05", "train.steps": "3", "sources": '[{"name": "r"}]'}
    curve = [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "loss")]
    assert sorted(curve) == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    tags = run.data.tags
    assert tags["kind"] == "midtrain" and tags["run_uri"] == "/runs/t1"
    assert tags["sys.device"] == "cpu" and tags["sys.python"] and tags["sys.torch"]


def test_a_failing_block_marks_the_run_failed(tracking_uri):
    config = MlflowConfig(tracking_uri=tracking_uri, experiment="emt-test")
    with pytest.raises(RuntimeError), training_run(config, run_name="bad", kind="midtrain", tags={}) as tracker:
        raise RuntimeError("loss is nan")
    assert mlflow.MlflowClient(tracking_uri).get_run(tracker.run_id).info.status == "FAILED"


def test_dataset_inputs_model_version_and_lineage(tracking_uri, manifest, local_corpus, tmp_path):
    config = MlflowConfig(tracking_uri=tracking_uri, experiment="emt-test")
    curation = record_run(
        config,
        run_name="c1",
        params={},
        metrics={},
        tags={"kind": "curation", "manifest_uri": manifest},
        files={},
    )
    assert find_run(tracking_uri, kind="curation", tag="manifest_uri", value=manifest) == curation
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")

    tags = {PARENT: curation, "lineage.curation_run_id": curation, "manifest_uri": manifest}
    with training_run(config, run_name="m1", kind="midtrain", tags=tags) as mid:
        sidecar = log_manifest_input(mid, manifest, None)
        first = log_model(mid, str(model_dir), registered_name="emt-test-vlm", storage=None, tags=tags)
    with training_run(config, run_name="m2", kind="midtrain", tags=tags) as again:
        assert log_model(again, str(model_dir), registered_name="emt-test-vlm", storage=None, tags={}) == first + 1

    ft_tags = {PARENT: mid.run_id, "lineage.midtrain_run_id": mid.run_id, "lineage.base_model": f"emt-test-vlm/{first}"}
    with training_run(config, run_name="f1", kind="finetune", tags=ft_tags) as ft:
        log_robot_inputs(ft, local_corpus.robot, None)
        log_model(ft, str(model_dir), registered_name="emt-test-vla", storage=None, tags=ft_tags)

    client = mlflow.MlflowClient(tracking_uri)
    (dataset,) = client.get_run(mid.run_id).inputs.dataset_inputs
    assert dataset.dataset.digest == dataset_digest(manifest, sidecar["content_sha256"])
    assert manifest in dataset.dataset.source
    input_tags = {t.key: t.value for t in dataset.tags}
    assert input_tags == {"mlflow.data.context": "training", "sha256": sidecar["content_sha256"]}
    robot = {d.dataset.name: d.dataset.digest for d in client.get_run(ft.run_id).inputs.dataset_inputs}
    assert robot == {s.name: dataset_digest(s.uri, robot_digest(s.uri, None)) for s in local_corpus.robot}
    assert len(set(robot.values())) == len(robot)  # different datasets, different digests

    (version,) = client.search_model_versions(f"name = 'emt-test-vla' and run_id = '{ft.run_id}'")
    assert version.source == f"runs:/{ft.run_id}/model" and version.tags["lineage.midtrain_run_id"] == mid.run_id
    assert {a.path for a in client.list_artifacts(ft.run_id, "model")} == {"model/config.json"}
    local = Path(client.download_artifacts(ft.run_id, "model/config.json"))
    assert local.read_text() == "{}"

    chain = lineage(ft.run_id, tracking_uri)
    assert [c["kind"] for c in chain] == ["finetune", "midtrain", "curation"]
    assert [c["run_id"] for c in chain] == [ft.run_id, mid.run_id, curation]
    assert chain[0]["model"] == "emt-test-vla/1"
    assert chain[1]["model"] == f"emt-test-vlm/{first}" and chain[1]["manifest_uri"] == manifest
    digest = dataset_digest(manifest, sidecar["content_sha256"])
    assert chain[1]["datasets"] == [{"name": "manifest", "source": manifest, "digest": digest}]
    assert chain[2]["manifest_uri"] == manifest


def test_the_same_content_at_two_places_keeps_each_runs_source(tracking_uri, manifest, tmp_path):
    """MLflow keeps one dataset record per (name, digest): a copy of a manifest logged by a later run must still
    show that run its own location, not the first copy's."""
    copy = tmp_path / "copy" / "manifest.parquet"
    copy.parent.mkdir()
    copy.write_bytes(Path(manifest).read_bytes())
    Path(str(copy).replace(".parquet", ".json")).write_bytes(Path(manifest.replace(".parquet", ".json")).read_bytes())
    config = MlflowConfig(tracking_uri=tracking_uri, experiment="emt-test-copies")
    runs = {}
    for uri in (manifest, str(copy)):
        with training_run(config, run_name="m", kind="midtrain", tags={}) as run:
            log_manifest_input(run, uri, None)
        runs[uri] = run.run_id
    client = mlflow.MlflowClient(tracking_uri)
    for uri, run_id in runs.items():
        (dataset,) = client.get_run(run_id).inputs.dataset_inputs
        assert json.loads(dataset.dataset.source)["uri"] == uri


def test_runs_nest_under_their_upstream_run_and_link_it_in_their_description(tracking_uri, tmp_path):
    """Curation -> midtrain -> finetune across two experiments: MLflow's parent tag, the markdown description's
    links, the code version, and a curation run recorded at its end that still lasts as long as its work did."""
    began = time.time() - 3.0  # the curation's work began 3 s before it is recorded
    curation = record_run(
        MlflowConfig(tracking_uri=tracking_uri, experiment="emt-test-curation"),
        run_name="p1",
        params={},
        metrics={},
        tags={"kind": "curation", "manifest_uri": "/runs/p1/manifest.parquet"},
        files={},
        start_time=began,
    )
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    config = MlflowConfig(tracking_uri=tracking_uri, experiment="emt-test-training")
    with training_run(config, run_name="p1", kind="midtrain", tags={PARENT: curation}) as mid:
        version = log_model(mid, str(model_dir), registered_name="emt-test-links-vlm", storage=None, tags={})
        describe_run(mid)
    with training_run(config, run_name="p1", kind="finetune", tags={PARENT: mid.run_id}) as ft:
        describe_run(ft)
    nested = {PARENT: mid.run_id, MLFLOW_PARENT: curation}  # an ablation unit nests under its own parent
    with training_run(config, run_name="unit", kind="finetune", tags=nested) as unit:
        pass

    client = mlflow.MlflowClient(tracking_uri)
    cur = client.get_run(curation)
    assert cur.info.start_time == int(began * 1000) and cur.info.end_time - cur.info.start_time >= 3000
    assert cur.data.tags[CODE_VERSION] == code_tags()[CODE_VERSION]
    mid_run, ft_run = client.get_run(mid.run_id), client.get_run(ft.run_id)
    assert mid_run.data.tags[MLFLOW_PARENT] == curation and ft_run.data.tags[MLFLOW_PARENT] == mid.run_id
    assert client.get_run(unit.run_id).data.tags[MLFLOW_PARENT] == curation
    note = ft_run.data.tags[NOTE]
    assert f"(#/experiments/{cur.info.experiment_id}/runs/{curation})" in note
    assert f"(#/experiments/{mid_run.info.experiment_id}/runs/{mid.run_id})" in note
    assert f"(#/models/emt-test-links-vlm/versions/{version})" in note
    assert note.index(curation) < note.index(mid.run_id) < note.index(ft.run_id)  # upstream first
    assert f"(#/experiments/{cur.info.experiment_id}/runs/{curation})" in mid_run.data.tags[NOTE]
    assert ft_run.data.tags[CODE_VERSION] == code_tags()[CODE_VERSION]
    (registered,) = client.search_model_versions("name = 'emt-test-links-vlm'")
    assert registered.tags[CODE_VERSION] == code_tags()[CODE_VERSION]


def test_experiments_open_in_the_mlflow_ml_view(tracking_uri):
    """The UI opens an experiment without ``mlflow.experimentKind`` in its GenAI view: ours carry the ML kind, and
    one made before (or by another tool) gets it on our first run in it."""
    client = mlflow.MlflowClient(tracking_uri)
    older = client.create_experiment("emt-made-elsewhere")
    assert "mlflow.experimentKind" not in client.get_experiment(older).tags
    for name in ("emt-fresh", "emt-made-elsewhere"):
        with training_run(MlflowConfig(tracking_uri=tracking_uri, experiment=name), run_name="v", kind="midtrain",
                          tags={}):
            pass
        tags = client.get_experiment_by_name(name).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development", name
