"""Record a curation run as an MLflow run (parameters, metrics, the report as artifacts, the manifest URI as a
tag), so that training runs can point at it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
from pydantic import Field

from tasks.config import Settings

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class MlflowConfig(Settings):
    """Where curation runs are tracked."""

    enabled: bool = Field(True, description="Record each curation run in MLflow.")
    tracking_uri: str | None = Field(
        None,
        description=f"MLflow tracking URI; None = MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI} "
        "(SQLite in the working directory).",
    )
    experiment: str = Field("emt-curation", description="MLflow experiment of curation runs.")

    def resolved_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _experiment_id(name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    return found.experiment_id if found else mlflow.create_experiment(name)


def record_run(
    config: MlflowConfig,
    *,
    run_name: str,
    params: dict,
    metrics: dict[str, float],
    tags: dict[str, str],
    files: dict[str, bytes],
) -> str:
    """Log one finished run; ``files`` maps artifact paths (``report/report.html``) to their bytes. Returns the
    MLflow run id."""
    mlflow.set_tracking_uri(config.resolved_uri())
    with mlflow.start_run(experiment_id=_experiment_id(config.experiment), run_name=run_name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            if files:
                mlflow.log_artifacts(tmp)
    return run.info.run_id
