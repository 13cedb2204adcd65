"""Parameters of the ``ablation`` flow: a pydantic model, so it is a typed Prefect UI form and a YAML config
(``deploy/ablation.example.yaml``), checked before the training stack is imported."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.settings import MlflowConfig, Settings, StorageConfig
from flows.training_params import RUN_NAME
from training.config import ChatDataConfig, RobotDataConfig, TrainConfig, VLAHeadConfig

Arm = Literal["none", "random", "curated"]  # training.ablation's arms (not imported here: it pulls in torch)


def _ablation_mlflow() -> MlflowConfig:
    return MlflowConfig(experiment="emt-ablation")


class AblationParams(Settings):
    """Compare fine-tuning without mid-training, after mid-training on a random draw of the pool, and after
    mid-training on the curated selection — same budget, S seeds."""

    model: str = Field(description="The base VLM every arm starts from: local directory, s3:// prefix or hub id.")
    manifest_uri: str = Field(description="The curation manifest: its selected rows are the curated arm's data, "
                              "its rows the pool the random arm draws from.")
    robot: RobotDataConfig = Field(description="Robot datasets and the held-out split (the same for every arm).")
    output_uri: str = Field(description="The ablation is written under OUTPUT_URI/RUN_ID/.")
    run_name: str | None = Field(None, pattern=RUN_NAME, description="Run id; None = a new timestamped id.")
    arms: list[Arm] = Field(
        ["none", "random", "curated"], min_length=2, description="The arms compared (at least two).")
    seeds: int = Field(3, ge=1, description="Seeds per arm (0..S-1); each seeds both trainings and the draw.")
    midtrain: TrainConfig = Field(default_factory=TrainConfig, description="Mid-training settings (every arm).")
    finetune: TrainConfig = Field(
        default_factory=lambda: TrainConfig(eval_every=10),
        description="Fine-tuning settings (every arm); eval_every sets the points of the held-out curves.")
    head: VLAHeadConfig = Field(default_factory=VLAHeadConfig, description="The action head.")
    data: ChatDataConfig = Field(default_factory=ChatDataConfig, description="Chat formatting of the samples.")
    eval_batches: int | None = Field(None, ge=1, description="Held-out batches per evaluation; None = all.")
    level: float = Field(0.95, gt=0, lt=1, description="Confidence level of the paired-seed bootstrap intervals.")
    n_boot: int = Field(10_000, ge=100, description="Bootstrap resamples.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage settings.")
    mlflow: MlflowConfig = Field(default_factory=_ablation_mlflow, description="MLflow tracking of the runs.")

    @field_validator("arms")
    @classmethod
    def _distinct(cls, v: list[Arm]) -> list[Arm]:
        if len(set(v)) != len(v):
            raise ValueError(f"arms must be distinct, got {v}")
        return v

    @field_validator("finetune")
    @classmethod
    def _curves(cls, v: TrainConfig) -> TrainConfig:
        if v.eval_every == 0:
            raise ValueError("finetune.eval_every must be at least 1: the comparison needs held-out curves")
        return v

    def result_params(self) -> dict:
        return self.model_dump(mode="json", exclude={"storage", "mlflow"})
