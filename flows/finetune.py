"""The ``finetune`` flow: fine-tune a (mid-trained) VLM into a VLA on robot episodes, evaluated on held-out
episodes, as an MLflow run whose dataset inputs are the robot datasets and whose lineage names the mid-training
run, its model version, and through it the curation run and manifest."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_training_artifacts
from flows.run import Run
from flows.training_params import FinetuneParams
from flows.training_step import train_and_register, train_config
from tasks.training_run import TrainingReport, check_model, check_robot_sources, parent_tags, upstream_run
from training.config import FinetuneConfig
from training.tracking import PARENT, log_robot_inputs

__all__ = ["TrainingReport", "finetune"]

_INHERITED = ("lineage.curation_run_id", "lineage.manifest_uri")  # copied from the mid-training run: one hop


@flow(name="finetune", log_prints=True)
def finetune(params: FinetuneParams) -> TrainingReport:
    """Fine-tune ``params.model`` into a VLA on ``params.robot``; returns the MLflow run id and the evaluation."""
    run = Run(params, TrainingReport)
    return run.execute(lambda: _finetune(params, run), publish=publish_training_artifacts)


def _finetune(params: FinetuneParams, run: Run[TrainingReport]) -> TrainingReport:
    storage = params.storage
    check_model(params.model, storage)
    check_robot_sources(params.robot.sources, storage)
    tracking_uri = params.mlflow.resolved_uri()
    midtrain = upstream_run(
        tracking_uri,
        params.midtrain_run_id,
        field_name="midtrain_run_id",
        kind="midtrain",
        tag="model_uri",
        value=params.model,
    )
    config = FinetuneConfig(
        model=params.model,
        output_uri=run.path("model"),
        robot=params.robot,
        head=params.head,
        storage=storage,
        train=train_config(params, run),
        eval_batches=params.eval_batches,
        closed_loop=params.closed_loop,
    )
    names = ", ".join(s.name for s in params.robot.sources)
    print(f"run {run.id}: fine-tuning {params.model} into a VLA on {names}")
    tags = {"base_model_uri": params.model}
    if midtrain:
        upstream = parent_tags(tracking_uri, midtrain)
        tags |= {PARENT: midtrain, "lineage.midtrain_run_id": midtrain}
        tags |= {k: upstream[k] for k in _INHERITED if k in upstream}
        if "model_name" in upstream:
            tags["lineage.base_model"] = f"{upstream['model_name']}/{upstream['model_version']}"
    return train_and_register(
        kind="finetune",
        params=params,
        registered_model=params.registered_model,
        run=run,
        config=config,
        tags=tags,
        parent_run_id=midtrain,
        log_inputs=lambda tracker: log_robot_inputs(tracker, params.robot.sources, storage),
    )
