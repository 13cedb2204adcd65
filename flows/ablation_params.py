"""Parameters of the ``ablation`` flow: a pydantic model, so it is a typed Prefect UI form and a YAML config
(``deploy/ablation.example.yaml``), checked before the training stack is imported."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from core.location import Location
from core.settings import MlflowConfig, Settings, StorageConfig
from flows.training_params import RUN_NAME
from training.config import ChatDataConfig, ClosedLoopConfig, RobotDataConfig, TrainConfig, VLAHeadConfig

Arm = Literal["none", "random", "sources", "curated"]  # training.ablation's arms (not imported here: it pulls in torch)
EXECUTION = {"executor", "ray_address", "unit_cpus", "unit_gpus", "max_parallel_units"}  # how, not what


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
        ["none", "random", "curated"], min_length=2, description="The arms compared (at least two): none, random, "
        "sources (K samples from the best top_sources sources by mean score) and curated.")
    top_sources: int = Field(2, ge=1, description="The sources arm mid-trains on the best this many pool sources.")
    seeds: int = Field(3, ge=1, description="Seeds per arm (0..S-1); each seeds both trainings and the draw.")
    midtrain: TrainConfig = Field(default_factory=TrainConfig, description="Mid-training settings (every arm).")
    finetune: TrainConfig = Field(
        default_factory=lambda: TrainConfig(eval_every=10),
        description="Fine-tuning settings (every arm); eval_every sets the points of the held-out curves.")
    head: VLAHeadConfig = Field(default_factory=VLAHeadConfig, description="The action head.")
    data: ChatDataConfig = Field(default_factory=ChatDataConfig, description="Chat formatting of the samples.")
    eval_batches: int | None = Field(None, ge=1, description="Held-out batches per evaluation; None = all.")
    closed_loop: ClosedLoopConfig | None = Field(
        None, description="Roll every fine-tuned VLA out in the toy world (robot data from emt synth's toy world) "
        "and compare the arms' success rates too; None = held-out loss only.")
    level: float = Field(0.95, gt=0, lt=1, description="Confidence level of the paired-seed t-intervals.")
    executor: Literal["auto", "local", "ray"] = Field(
        "auto", description="How the (arm, seed) units run: local = one after another in the flow's process; "
        "ray = one Ray task each, as many at once as the cluster has room for; auto = ray when a cluster is "
        "configured (ray_address or RAY_ADDRESS) and has room for a unit, else local. The result is the same.")
    ray_address: str | None = Field(
        None, description="Ray cluster of the units; None = RAY_ADDRESS, else (executor ray) a local Ray.")
    unit_cpus: int = Field(
        1, ge=1, description="CPU threads every unit trains with, on either executor (the same count gives the "
        "same numbers), and the CPUs a Ray unit reserves.")
    unit_gpus: float = Field(
        0.0, ge=0, description="GPUs a Ray unit reserves (1 on a GPU cluster; a fraction shares one GPU); "
        "a local unit uses this process's GPU if it has one.")
    max_parallel_units: int | None = Field(
        None, ge=1, description="Ray: most units at once; None = as many as the cluster has room for.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage settings.")
    mlflow: MlflowConfig = Field(default_factory=_ablation_mlflow, description="MLflow tracking of the runs.")

    @model_validator(mode="before")
    @classmethod
    def _no_bootstrap(cls, data: Any) -> Any:
        """``n_boot`` (bootstrap resamples) is gone with the bootstrap: an older config still runs."""
        if isinstance(data, dict) and "n_boot" in data:
            warnings.warn("n_boot is ignored: the intervals are Student-t now", DeprecationWarning, stacklevel=2)
            data = {k: v for k, v in data.items() if k != "n_boot"}
        return data

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

    @field_validator("unit_gpus")
    @classmethod
    def _gpu_share(cls, v: float) -> float:
        if v > 1 and not v.is_integer():  # Ray places a fraction of one GPU or whole GPUs, nothing between
            raise ValueError(f"unit_gpus above 1 must be a whole number of GPUs, got {v}")
        return v

    def result_params(self) -> dict:
        """Everything that decides the result: not where it is stored or tracked, nor how the units run."""
        return self.model_dump(mode="json", exclude={"storage", "mlflow", *EXECUTION})

    @property
    def manifest(self) -> Location:
        return Location(self.manifest_uri, self.storage)
