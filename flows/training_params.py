"""Parameters of the training flows (``midtrain``, ``finetune``, ``pipeline``): pydantic models, so each becomes a
typed Prefect UI form and a YAML config, and a bad value is rejected before any work starts.

A *step* model holds what a step of the pipeline needs besides its inputs; the standalone flows add the inputs (a
manifest, a model), while the pipeline feeds them from the step before (the curate report, the mid-training report).
(A *stage*, in ``tasks``, is the other thing: an object that processes batches, such as ``Embed``.)
"""

from __future__ import annotations

from pydantic import Field, field_validator

from core.location import Location
from core.settings import MlflowConfig, Settings, StorageConfig
from flows.params import CurateParams
from training.config import ChatDataConfig, ClosedLoopConfig, RobotDataConfig, TrainConfig, VLAHeadConfig

RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class TrainingMlflowConfig(MlflowConfig):
    """MLflow tracking of a training run, filed under ``emt-training`` by default. A model of its own (not a
    ``default_factory``, which a JSON schema cannot show): the Prefect UI form builds the field from this schema,
    so a run started there goes to ``emt-training``, not to the curation experiment of ``MlflowConfig``."""

    experiment: str = Field("emt-training", description="MLflow experiment the runs are filed under.")


class TrainingStep(Settings):
    """What every training step shares: where it writes, where it runs, where it is tracked."""

    output_uri: str = Field(description="Runs are written under OUTPUT_URI/RUN_ID/ (model/, checkpoints/).")
    run_name: str | None = Field(
        None, pattern=RUN_NAME, description="Run id; None = a new timestamped id (in a pipeline: the curate run's)."
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Object storage settings (in a pipeline, unset = curate's)."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation settings.")
    workers: int = Field(1, ge=1, description="Training workers: 1 = in this process; more = Ray Train (DDP).")
    ray_address: str | None = Field(
        None, description="Ray cluster for workers > 1; None = RAY_ADDRESS, else a local Ray."
    )
    use_gpu: bool = Field(False, description="Ray Train workers each take one GPU (NCCL); else CPU (gloo).")
    mlflow: TrainingMlflowConfig = Field(
        default_factory=TrainingMlflowConfig, description="MLflow tracking of the run (experiment emt-training)."
    )

    @field_validator("mlflow", mode="before")
    @classmethod
    def _training_experiment(cls, v: object) -> object:
        """A plain ``MlflowConfig`` is taken field by field; one that leaves its experiment unset gets
        ``emt-training``, not the curation default."""
        if isinstance(v, MlflowConfig) and not isinstance(v, TrainingMlflowConfig):
            return v.model_dump(exclude_unset=True)
        return v

    @field_validator("mlflow")
    @classmethod
    def _tracked(cls, v: TrainingMlflowConfig) -> TrainingMlflowConfig:
        if not v.enabled:
            raise ValueError("training runs are always tracked in MLflow (enabled must be true)")
        return v

    def result_params(self) -> dict:
        """The parameters that decide a run's result: not where and how it runs (storage, workers, MLflow), so a
        finished run asked for again with other *result* parameters is refused rather than returned."""
        return self.model_dump(mode="json", exclude={"storage", "workers", "ray_address", "use_gpu", "mlflow"})


class MidtrainStep(TrainingStep):
    """Mid-training, short of its input manifest."""

    model: str = Field(description="The VLM to start from: local directory, s3:// prefix or hub id.")
    data: ChatDataConfig = Field(default_factory=ChatDataConfig, description="Chat formatting of the samples.")
    registered_model: str = Field("emt-vlm", description="MLflow registered model the mid-trained VLM joins.")


class MidtrainParams(MidtrainStep):
    """Mid-train a VLM on the samples a curation manifest selects."""

    manifest_uri: str = Field(description="The curation manifest (RUN/manifest.parquet, its sidecar beside it).")
    curation_run_id: str | None = Field(
        None, description="MLflow run id of the curation that wrote the manifest; None = found by its URI."
    )

    @property
    def manifest(self) -> Location:
        return Location(self.manifest_uri, self.storage)


class FinetuneStep(TrainingStep):
    """Fine-tuning into a VLA, short of its input model."""

    robot: RobotDataConfig = Field(description="Robot datasets, action chunking and the held-out split.")
    head: VLAHeadConfig = Field(default_factory=VLAHeadConfig, description="The action head.")
    eval_batches: int | None = Field(
        None, ge=1, description="Held-out batches per evaluation; None = every held-out sample."
    )
    closed_loop: ClosedLoopConfig | None = Field(
        None, description="Roll the VLA out in the toy world after training (robot data from emt synth's toy "
        "world): success rate with a Wilson interval and a GIF in MLflow; None = held-out evaluation only."
    )
    registered_model: str = Field("emt-vla", description="MLflow registered model the VLA joins.")


class FinetuneParams(FinetuneStep):
    """Fine-tune a (mid-trained) VLM into a VLA on robot episodes, evaluated on held-out episodes."""

    model: str = Field(description="The VLM to start from (a mid-training run's model/): directory, s3:// or hub id.")
    midtrain_run_id: str | None = Field(
        None, description="MLflow run id of the mid-training that produced the model; None = found by its URI."
    )


class PipelineParams(Settings):
    """Curate, mid-train on the selection, fine-tune the result into a VLA: one run id through all three."""

    curate: CurateParams = Field(description="The curation step.")
    midtrain: MidtrainStep = Field(description="Mid-training on the curated manifest.")
    finetune: FinetuneStep = Field(description="Fine-tuning the mid-trained VLM into a VLA.")
