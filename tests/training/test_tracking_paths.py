"""MLflow artifacts land beside the SQLite tracking store, not in ``./mlruns`` of the directory a run starts in."""

from __future__ import annotations

from pathlib import Path

import mlflow

from core.settings import MlflowConfig
from training.recording import record_run


def test_artifacts_go_beside_the_sqlite_store(tmp_path, monkeypatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = MlflowConfig(tracking_uri=f"sqlite:///{store}/mlflow.db", experiment="artifact-paths")
    run_id = record_run(config, run_name="r", params={}, metrics={}, tags={}, files={"report/a.txt": b"x"})
    artifact_uri = mlflow.MlflowClient(config.tracking_uri).get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((store / "mlartifacts").as_uri())
    assert (Path(artifact_uri.removeprefix("file://")) / "report/a.txt").read_bytes() == b"x"
    assert list(elsewhere.iterdir()) == []
