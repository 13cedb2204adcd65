"""Several training workers through Ray Train (``TorchTrainer``: DDP, gloo on CPU, NCCL on GPU) on the Ray
cluster this process is connected to (the one curation uses; ``ray.init`` is the caller's).

Every worker runs the very same recipe: ``torch.distributed`` is set up by Ray Train, so the loop wraps the
model in DDP, each rank reads its own share of the data, and rank zero alone logs, evaluates and saves. The
tracker is built on rank zero by ``tracker_factory`` (a tracker may hold a client that cannot travel).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from training.config import FinetuneConfig, MidtrainConfig
from training.loop import TrainResult
from training.metrics import Tracker

Recipe = Literal["midtrain", "finetune"]


def _worker(payload: dict[str, Any]) -> None:
    """One Ray Train worker: the recipe, on this worker's device."""
    import ray.train
    import ray.train.torch

    from training.recipes import finetune, midtrain

    factory: Callable[[], Tracker] | None = payload["tracker_factory"]
    rank = ray.train.get_context().get_world_rank()
    tracker = factory() if factory is not None and rank == 0 else None
    recipe = midtrain if payload["recipe"] == "midtrain" else finetune
    result = recipe(payload["config"], tracker, device=ray.train.torch.get_device())
    # Ray Train keeps the metrics of reports that carry a checkpoint: rank zero's carries its result.
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            Path(tmp, "result.json").write_text(json.dumps(asdict(result)))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"steps": result.steps}, checkpoint=checkpoint)


def run_distributed(
    recipe: Recipe,
    config: MidtrainConfig | FinetuneConfig,
    *,
    num_workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    tracker_factory: Callable[[], Tracker] | None = None,
    storage_path: str | None = None,
) -> TrainResult:
    """Run ``recipe`` ("midtrain" or "finetune") on ``num_workers`` Ray Train workers; rank zero's result.

    ``train.batch_size`` is per worker: the global batch is ``num_workers x batch_size x grad_accum``.
    ``storage_path`` is where Ray Train keeps its own run records (a temporary directory by default); the
    model and checkpoints go where the config says.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    expected = MidtrainConfig if recipe == "midtrain" else FinetuneConfig
    if not isinstance(config, expected):
        raise ValueError(f"recipe {recipe!r} takes a {expected.__name__}, not a {type(config).__name__}")
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"recipe": recipe, "config": config, "tracker_factory": tracker_factory},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
            run_config=RunConfig(storage_path=storage_path or tmp, name=f"emt-{recipe}"),
        )
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        with result.checkpoint.as_directory() as path:
            return TrainResult(**json.loads(Path(path, "result.json").read_text()))
