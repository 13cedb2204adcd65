"""Prefect task wrappers of the training steps: the recipe run (in this process, or on Ray Train when there is
more than one worker) and the model's registration in MLflow (retried: it is storage and network I/O)."""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NONE

from training import recipes
from training.config import FinetuneConfig, MidtrainConfig
from training.loop import TrainResult
from training.metrics import Tracker
from training.tracking import log_model

_RECIPES = {"midtrain": recipes.midtrain, "finetune": recipes.finetune}


@task(name="train", cache_policy=NONE)
def train_task(
    kind: Literal["midtrain", "finetune"],
    config: MidtrainConfig | FinetuneConfig,
    tracker: Tracker,
    *,
    workers: int,
    use_gpu: bool,
) -> TrainResult:
    """Run the recipe; with ``workers > 1`` on the Ray cluster this process is attached to (DDP), where only
    rank zero gets the tracker."""
    if workers == 1:
        return _RECIPES[kind](config, tracker)
    from training.distributed import run_distributed

    return run_distributed(kind, config, num_workers=workers, use_gpu=use_gpu, tracker_factory=lambda: tracker)


# Registering talks to the tracking server only: retried as I/O. The task is log_model itself (no restated
# signature).
register_model_task = task(log_model, name="register-model", retries=2, retry_delay_seconds=5, cache_policy=NONE)
