"""The ``midtrain`` flow: mid-train a VLM on the samples a curation manifest selects, as an MLflow run whose
dataset input is the manifest and whose lineage names the curation run; the VLM is saved under
OUTPUT_URI/RUN_ID/model and registered in MLflow."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_training_artifacts
from flows.run import Run
from flows.training_params import MidtrainParams
from flows.training_step import train_and_register, train_config
from tasks.training_run import TrainingReport, check_manifest_uri, check_model, upstream_run
from training.config import MidtrainConfig
from training.tracking import PARENT, log_manifest_input

__all__ = ["TrainingReport", "midtrain"]


@flow(name="midtrain", log_prints=True)
def midtrain(params: MidtrainParams) -> TrainingReport:
    """Mid-train ``params.model`` on ``params.manifest_uri``'s selected samples; returns the MLflow run id."""
    run = Run(params, TrainingReport)
    return run.execute(lambda: _midtrain(params, run), publish=publish_training_artifacts)


def _midtrain(params: MidtrainParams, run: Run[TrainingReport]) -> TrainingReport:
    storage = params.storage
    selected = check_manifest_uri(params.manifest)
    check_model(params.model, storage)
    tracking_uri = params.mlflow.resolved_uri()
    curation = upstream_run(
        tracking_uri,
        params.curation_run_id,
        field_name="curation_run_id",
        kind="curation",
        tag="manifest_uri",
        value=params.manifest_uri,
    )
    config = MidtrainConfig(
        model=params.model,
        manifest_uri=params.manifest_uri,
        output_uri=run.path("model"),
        storage=storage,
        train=train_config(params, run),
        data=params.data,
    )
    print(f"run {run.id}: mid-training {params.model} on {selected} selected samples of {params.manifest_uri}")
    tags = {"manifest_uri": params.manifest_uri, "lineage.manifest_uri": params.manifest_uri}
    if curation:
        tags |= {PARENT: curation, "lineage.curation_run_id": curation}
    return train_and_register(
        kind="midtrain",
        params=params,
        registered_model=params.registered_model,
        run=run,
        config=config,
        tags=tags,
        parent_run_id=curation,
        log_inputs=lambda tracker: log_manifest_input(tracker, params.manifest),
    )
