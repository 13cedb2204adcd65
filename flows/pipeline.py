"""The ``pipeline`` flow: curate -> midtrain -> finetune as subflows, each step's output the next one's input
(the manifest and the curation's MLflow run; the mid-trained VLM and its MLflow run), one run id through all
three. Each step keeps its own rule: a finished step is not redone, so rerunning a pipeline resumes it."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from flows.artifacts import curation_run_link, mlflow_run_link, report_link
from flows.curate import CurateReport, curate
from flows.finetune import finetune
from flows.midtrain import midtrain
from flows.training_params import FinetuneParams, MidtrainParams, PipelineParams, TrainingStep
from tasks.training_run import TrainingReport


class PipelineReport(BaseModel):
    """The three steps' reports; ``mlflow_run_ids`` names the run tree."""

    curate: CurateReport
    midtrain: TrainingReport
    finetune: TrainingReport

    @property
    def mlflow_run_ids(self) -> dict[str, str | None]:
        return {
            "curation": self.curate.mlflow_run_id,
            "midtrain": self.midtrain.mlflow_run_id,
            "finetune": self.finetune.mlflow_run_id,
        }


def _inputs(step: TrainingStep, params: PipelineParams, run_id: str) -> dict:
    """A step's fields as given, with the pipeline's defaults: the curate run's id and (unless set) storage."""
    given = dict(step)  # fields as objects (a dump would mask the storage secrets)
    given["run_name"] = step.run_name or run_id
    if "storage" not in step.model_fields_set:
        given["storage"] = params.curate.storage
    return given


@flow(name="pipeline", log_prints=True)
def pipeline(params: PipelineParams) -> PipelineReport:
    """Curate, mid-train on the selection, fine-tune into a VLA; returns the three MLflow run ids."""
    curated = curate(params.curate)
    mid = midtrain(
        MidtrainParams.model_validate(
            _inputs(params.midtrain, params, curated.run_id)
            | {"manifest_uri": curated.manifest_uri, "curation_run_id": curated.mlflow_run_id}
        )
    )
    tuned = finetune(
        FinetuneParams.model_validate(
            _inputs(params.finetune, params, curated.run_id)
            | {"model": mid.model_uri, "midtrain_run_id": mid.mlflow_run_id}
        )
    )
    report = PipelineReport(curate=curated, midtrain=mid, finetune=tuned)
    curation_tracking = params.curate.mlflow.resolved_uri() if params.curate.mlflow.enabled else None
    evaluation = " ".join(f"{k}={v:.4f}" for k, v in tuned.eval_metrics().items())
    create_markdown_artifact(
        key="pipeline-summary",
        markdown="\n".join(
            [
                f"# Pipeline run `{curated.run_id}`",
                f"- curation: MLflow {curation_run_link(curated, curation_tracking)}, manifest "
                f"`{curated.manifest_uri}` ({curated.selected} of {curated.pool_samples} selected), report "
                f"{report_link(curated, curation_tracking)}",
                f"- midtrain: MLflow {mlflow_run_link(mid.tracking_uri, mid.experiment_id, mid.mlflow_run_id)}, "
                f"`{mid.registered_model}` v{mid.model_version}",
                f"- finetune: MLflow {mlflow_run_link(tuned.tracking_uri, tuned.experiment_id, tuned.mlflow_run_id)}"
                f", `{tuned.registered_model}` v{tuned.model_version}",
                f"- held-out evaluation: {evaluation or 'none (no held-out episode)'}",
            ]
        ),
    )
    return report
