"""What the ``midtrain`` and ``finetune`` flows share: one MLflow run per run folder (an interrupted run, rerun
under the same name, resumes its checkpoints and its MLflow run; ``flows.run.Run``), the recipe on this process or
on Ray Train, the model registered (a VLA as an MLflow pyfunc model), the report logged to the MLflow run
(``report.json``), and the run's description written (lineage)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal

from flows.run import Run
from flows.runtime import ray_session
from flows.training_params import TrainingStep
from synth.toyworld import TabletopEnv
from tasks.training_run import ProgressTracker, TrainingReport
from tasks.training_tasks import register_model_task, train_task
from training.closed_loop import closed_loop_eval, log_closed_loop_artifacts
from training.config import FinetuneConfig, MidtrainConfig, TrainConfig
from training.recording import MlflowTracker, describe_run
from training.vla_pyfunc import save_vla_pyfunc


def train_config(params: TrainingStep, run: Run[TrainingReport]) -> TrainConfig:
    """Checkpoints default to the run folder, so rerunning an interrupted run resumes it."""
    if params.train.checkpoint_uri is not None:
        return params.train
    return params.train.model_copy(update={"checkpoint_uri": run.path("checkpoints")})


def train_and_register(
    *,
    kind: Literal["midtrain", "finetune"],
    params: TrainingStep,
    registered_model: str,
    run: Run[TrainingReport],
    config: MidtrainConfig | FinetuneConfig,
    tags: dict[str, str],
    parent_run_id: str | None,
    log_inputs: Callable[[MlflowTracker], None],
) -> TrainingReport:
    """Train ``config`` as the MLflow run of ``run`` and register the model; returns the run's report."""
    tags = {**tags, "run_uri": run.uri, "checkpoint_uri": config.train.checkpoint_uri}
    with run.tracked(params.mlflow, kind=kind, tags=tags) as tracker:
        log_inputs(tracker)
        distributed = ray_session(params.ray_address) if params.workers > 1 else contextlib.nullcontext()
        with distributed:
            result = train_task(
                kind,
                config,
                ProgressTracker(tracker, kind, config.train.steps),
                workers=params.workers,
                use_gpu=params.use_gpu,
            )
        closed = {}
        if isinstance(config, FinetuneConfig) and config.closed_loop is not None:  # rolled out in the toy world
            print(f"run {run.id}: rolling the VLA out in the toy world ({config.closed_loop.episodes} episodes)")
            closed = closed_loop_eval(config.output_uri, TabletopEnv, config.closed_loop, storage=params.storage,
                                      tracker=tracker, step=result.steps).metrics()
            log_closed_loop_artifacts(tracker.client, tracker.run_id, config.output_uri, params.storage)
        version = register_model_task(
            tracker,
            config.output_uri,
            registered_name=registered_model,
            storage=params.storage,
            tags=tags,
            mlflow_model=save_vla_pyfunc if kind == "finetune" else None,  # the VLA loads with mlflow.pyfunc
        )
        summary = {k: float(v) for k, v in result.summary().items() if isinstance(v, int | float)} | closed
        report = TrainingReport(
            kind=kind,
            run_id=run.id,
            run_uri=run.uri,
            model_uri=config.output_uri,
            mlflow_run_id=tracker.run_id,
            experiment_id=tracker.client.get_run(tracker.run_id).info.experiment_id,
            tracking_uri=tracker.tracking_uri,
            registered_model=registered_model,
            model_version=version,
            parent_run_id=parent_run_id,
            checkpoint_uri=result.checkpoint,
            steps=result.steps,
            final_loss=result.final_loss,
            metrics=summary,
            seconds=run.seconds(),
        )
        tracker.client.log_text(tracker.run_id, report.model_dump_json(indent=1), "report.json")
        describe_run(tracker)
    return report
