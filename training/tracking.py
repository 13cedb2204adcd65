"""MLflow tracking shared by every run kind: a finished run logged in one call (curation), and the helpers
training runs build on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from core.settings import MlflowConfig


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
