"""What the curation and pipeline summaries link: the curation's MLflow run and its HTML report, as pages the
MLflow server serves (the report through its artifact endpoint), or where they are when no server tracked them."""

from __future__ import annotations

import urllib.request

import mlflow
import pytest

from flows.artifacts import curation_run_link, report_link
from tasks.curation_record import CurateReport


def _report(**given) -> CurateReport:
    return CurateReport(run_id="r1", run_uri="s3://b/runs/r1", manifest_uri="s3://b/runs/r1/manifest.parquet",
                        pool_samples=10, selected=1, per_source={}, quarantined={}, shards_embedded=1,
                        shards_cached=0, scorer={}, seconds=1.0, **given)


def test_links_without_a_tracking_server():
    report = _report(mlflow_run_id="abc", report_uri="s3://b/runs/r1/report.html")
    assert report_link(report, None) == "`s3://b/runs/r1/report.html`"
    assert report_link(report, "sqlite:///mlflow.db") == "`s3://b/runs/r1/report.html`"
    assert report_link(_report(), None).startswith("none")
    assert curation_run_link(_report(), None) == "not tracked"


@pytest.mark.slow  # a real MLflow server
def test_the_report_link_opens_the_report_from_the_mlflow_server(tmp_path):
    from infra.services import mlflow_server

    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as uri:
        client = mlflow.MlflowClient(uri)  # not the process-wide tracking URI: other tests use the test store
        (tmp_path / "report.html").write_text("<html>the report</html>")
        run = client.create_run(client.create_experiment("links"))
        client.log_artifact(run.info.run_id, str(tmp_path / "report.html"), "report")
        report = _report(mlflow_run_id=run.info.run_id, report_uri=str(tmp_path / "report.html"))
        link = report_link(report, uri)
        page = link.split("](", 1)[1].split(")", 1)[0]
        with urllib.request.urlopen(page, timeout=60) as response:
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.read() == b"<html>the report</html>"
        assert f"{uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id})" in curation_run_link(
            report, uri)
