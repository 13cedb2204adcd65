"""The training steps as units of work for the flows: check a run's parameters before anything starts, report
progress while it trains, and what the run returns and stores (``TrainingReport``).

Parameter-level checks live here (does the manifest, the model, the upstream MLflow run exist?); the recipes
check the data itself (action sizes, chunk length, split) before their first step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import mlflow
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from core.location import Location
from core.model_files import looks_like_path
from core.settings import ConfigError, SourceSpec, StorageConfig
from core.storage import exists, join
from training.metrics import Tracker
from training.midtrain_data import check_manifest
from training.recording import find_run


class TrainingReport(BaseModel):
    """What a mid-training or fine-tuning run returns (and stores as ``report.json``)."""

    kind: Literal["midtrain", "finetune"]
    run_id: str
    run_uri: str
    model_uri: str
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    registered_model: str
    model_version: int
    parent_run_id: str | None
    checkpoint_uri: str | None
    steps: int
    final_loss: float
    metrics: dict[str, float]
    seconds: float

    def eval_metrics(self) -> dict[str, float]:
        """The last held-out evaluation (fine-tuning): ``l1/dim<i>``, ``l1/arm``, ``gripper_accuracy``, ``loss``."""
        return {k.removeprefix("eval/"): v for k, v in self.metrics.items() if k.startswith("eval/")}


def _fail(field_name: str, message: str) -> ConfigError:
    return ConfigError(f"{field_name}: {message}")


def check_model(model: str, storage: StorageConfig | None, *, field_name: str = "model") -> None:
    """A model given as a path or prefix must hold a saved model (``config.json``); hub ids pass."""
    if looks_like_path(model) and not exists(join(model, "config.json"), storage):
        raise _fail(field_name, f"no saved model at {model!r} (no config.json)")


def check_manifest_uri(manifest: Location, *, field_name: str = "manifest_uri") -> int:
    """The manifest exists, has its sidecar and selects at least one row; returns the selected count."""
    try:
        return check_manifest(manifest)
    except ValueError as err:
        raise _fail(field_name, str(err).removeprefix("manifest_uri ")) from None


def check_robot_sources(sources: list[SourceSpec], storage: StorageConfig | None, *, prefix: str = "robot") -> None:
    for i, spec in enumerate(sources):
        if not exists(join(spec.uri, "meta/info.json"), storage):
            raise _fail(f"{prefix}.sources.{i}.uri", f"no LeRobot dataset at {spec.uri!r} (no meta/info.json)")


def upstream_run(
    tracking_uri: str, run_id: str | None, *, field_name: str, kind: str, tag: str, value: str
) -> str | None:
    """The upstream MLflow run for lineage: ``run_id`` if given (it must exist), else the newest finished run of
    ``kind`` whose ``tag`` is ``value`` (none: the input came from outside the product)."""
    if run_id is None:
        return find_run(tracking_uri, kind=kind, tag=tag, value=value)
    try:
        mlflow.MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        raise _fail(field_name, f"no MLflow run {run_id!r} at {tracking_uri}") from None
    return run_id


def parent_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    return dict(mlflow.MlflowClient(tracking_uri).get_run(run_id).data.tags)


@dataclass
class ProgressTracker:
    """Wraps the run's tracker and prints one line per logged step — step of total, loss, throughput and ETA —
    which the CLI shows and Prefect keeps as the flow run's logs. Picklable like the tracker it wraps."""

    inner: Tracker
    kind: str
    total: int
    start: float = field(default_factory=time.time)

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        elapsed = time.time() - self.start
        eta = elapsed / max(step, 1) * max(self.total - step, 0)
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in _SHOWN or k.startswith(_SHOWN_PREFIXES))
        print(f"{self.kind} step {step}/{self.total} {shown} ({elapsed:.0f}s, ETA {eta:.0f}s)", flush=True)


_SHOWN = ("loss", "lr", "samples_per_s")
_SHOWN_PREFIXES = ("eval/", "skipped/")  # skipped samples by reason (cumulative): a stale manifest shows at once
