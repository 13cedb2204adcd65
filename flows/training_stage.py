"""What the ``midtrain`` and ``finetune`` flows share: a run folder whose finished run is never redone, one MLflow
run per run folder (an interrupted run, rerun under the same name, resumes its checkpoints and its MLflow run),
the recipe on this process or on Ray Train, the model registered (a VLA as an MLflow pyfunc model), the report
stored, logged to the MLflow run (``report.json``) and published, and the run's description written (lineage)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Literal

from core.storage import check_writable, exists
from flows.artifacts import publish_training_artifacts
from flows.runtime import ray_session
from flows.training_params import TrainingStage
from synth.toyworld import TabletopEnv
from tasks.run_folder import RunFolder
from tasks.training_run import ProgressTracker, TrainingReport
from tasks.training_tasks import register_model_task, train_task
from training.closed_loop import closed_loop_eval, log_closed_loop_artifacts
from training.config import FinetuneConfig, MidtrainConfig, TrainConfig
from training.recording import MLFLOW_RUN, MlflowTracker, describe_run
from training.tracking import training_run
from training.vla_pyfunc import save_vla_pyfunc


def open_run(params: TrainingStage) -> tuple[RunFolder, TrainingReport | None]:
    """The run folder (its output checked writable), and its stored report if the run already finished with the
    same result parameters (other ones are refused)."""
    check_writable(params.output_uri, params.storage, setting="output_uri")
    run = RunFolder.open(params.output_uri, params.run_name, params.storage)
    if run.is_complete():
        run.refuse_other_params(params.result_params())
        print(f"run {run.run_id} is already complete at {run.uri}")
        return run, TrainingReport.model_validate(run.read_json("report.json"))
    return run, None


def train_config(params: TrainingStage, run: RunFolder) -> TrainConfig:
    """Checkpoints default to the run folder, so rerunning an interrupted run resumes it."""
    if params.train.checkpoint_uri is not None:
        return params.train
    return params.train.model_copy(update={"checkpoint_uri": run.path("checkpoints")})


def run_stage(
    *,
    kind: Literal["midtrain", "finetune"],
    params: TrainingStage,
    registered_model: str,
    run: RunFolder,
    config: MidtrainConfig | FinetuneConfig,
    tags: dict[str, str],
    parent_run_id: str | None,
    log_inputs: Callable[[MlflowTracker], None],
) -> TrainingReport:
    """Train ``config`` as the MLflow run of ``run`` (holding the run id meanwhile), register the model, store and
    publish the report."""
    with run.claim():  # a second run of the same name is refused, not interleaved with this one
        report = _train(kind, params, registered_model, run, config, tags, parent_run_id, log_inputs)
    publish_training_artifacts(report)
    return report


def _train(
    kind: Literal["midtrain", "finetune"],
    params: TrainingStage,
    registered_model: str,
    run: RunFolder,
    config: MidtrainConfig | FinetuneConfig,
    tags: dict[str, str],
    parent_run_id: str | None,
    log_inputs: Callable[[MlflowTracker], None],
) -> TrainingReport:
    start = time.perf_counter()
    resumed = run.read_json(MLFLOW_RUN)["run_id"] if exists(run.path(MLFLOW_RUN), params.storage) else None
    tags = {**tags, "run_uri": run.uri, "checkpoint_uri": config.train.checkpoint_uri}
    with training_run(params.mlflow, run_name=run.run_id, kind=kind, tags=tags, run_id=resumed) as tracker:
        if resumed is None:
            run.write_json(MLFLOW_RUN, {"run_id": tracker.run_id, "tracking_uri": tracker.tracking_uri})
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
            print(f"run {run.run_id}: rolling the VLA out in the toy world ({config.closed_loop.episodes} episodes)")
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
            run_id=run.run_id,
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
            seconds=round(time.perf_counter() - start, 2),
        )
        tracker.client.log_text(tracker.run_id, report.model_dump_json(indent=1), "report.json")
        describe_run(tracker)
    run.write_json("params.json", params)
    run.write_json("report.json", report)
    run.mark_complete()  # last: the run is complete
    return report
