"""Curation runs recorded through a real `mlflow server` (SQLite backend, proxied artifact store)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from core.settings import MlflowConfig
from infra.services import mlflow_server
from training.recording import record_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


def test_record_run_on_a_tracking_server(tracking_server):
    run_id = record_run(
        MlflowConfig(tracking_uri=tracking_server, experiment="emt-test"),
        run_name="r1",
        params={"scorer": "estimator", "k": 5},
        metrics={"selected": 5.0, "diversity_pool": 1.25},
        tags={"manifest_uri": "s3://runs/r1/manifest.parquet"},
        files={"report/report.html": b"<html></html>", "manifest.json": b"{}"},
    )
    client = mlflow.MlflowClient(tracking_server)
    run = client.get_run(run_id)
    assert run.data.tags["manifest_uri"] == "s3://runs/r1/manifest.parquet"
    assert run.data.metrics == {"selected": 5.0, "diversity_pool": 1.25}
    assert {a.path for a in client.list_artifacts(run_id, "report")} == {"report/report.html"}
    local = client.download_artifacts(run_id, "report/report.html")
    assert Path(local).read_bytes() == b"<html></html>"


def test_record_run_leaves_the_process_tracking_uri_alone(tracking_server, mlflow_store):
    """A run recorded on a server must not send the process's later runs there (``mlflow.set_tracking_uri`` would
    rewrite ``MLFLOW_TRACKING_URI``)."""
    record_run(
        MlflowConfig(tracking_uri=tracking_server, experiment="emt-test"),
        run_name="r2",
        params={},
        metrics={},
        tags={},
        files={},
    )
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_store
    assert mlflow.get_tracking_uri() == mlflow_store
