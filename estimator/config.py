"""How the pool is scored, as configuration: the scorer and the proximity estimator's training settings.

Pydantic models only, importing neither torch nor the scorers, so a run's configuration (``flows.params``)
validates without the model stack; ``estimator.scorer`` and ``estimator.probe`` act on them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from core.settings import Settings

Part = Literal["image", "text", "all"]  # which part of a sample vector a scorer reads (``estimator.features``)


class EstimatorConfig(Settings):
    """How the proximity estimator is trained (defaults: the paper's recipe)."""

    head: Literal["linear", "mlp"] = Field("linear", description="f: one linear layer, or a 1-hidden-layer MLP.")
    hidden_dim: int = Field(256, ge=1, description="mlp head: hidden width.")
    batch_size: int = Field(128, ge=2, description="Balanced batch size: half robot, half pool (must be even).")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_steps: int = Field(2000, ge=1, description="Hard limit on optimizer steps.")
    target_val_accuracy: float = Field(
        0.9, gt=0, le=1, description="Stop once balanced validation accuracy reaches this (after min_steps)."
    )
    min_steps: int = Field(50, ge=0, description="Never stop early before this many steps.")
    eval_every: int = Field(25, ge=1, description="Evaluate on the validation split every n steps.")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of each class held out for validation.")
    seed: int = Field(0, description="Seeds the split, the initial weights and the batch sampler.")
    normalize: bool = Field(
        True, description="Standardise features with the training split's mean/std (stored in the estimator)."
    )

    @field_validator("batch_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (half robot, half pool)")
        return v


class ScorerConfig(Settings):
    """Which scorer ranks the pool."""

    method: Literal["estimator", "random", "mean_distance", "knn", "normsim"] = Field(
        "estimator", description="estimator: the trained proximity estimator (the recipe); the paper's "
        "baselines: random, negative mean L2 distance to robot features, mean cosine to k nearest; normsim: "
        "training-free p-norm of the cosine similarities to every robot feature."
    )
    features: Part = Field(
        "image", description="Which part of the sample vector the scorer reads: image (default: robot "
        "instructions are worded unlike web texts, and a scorer reading the text ranks by wording), text, or all. "
        "A fused hf_vlm vector is read whole."
    )
    knn_k: int = Field(10, ge=1, description="knn: number of nearest robot features averaged.")
    normsim_p: float = Field(2.0, ge=1, description="normsim: the norm's p (inf = nearest robot sample).")
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig, description="estimator: training settings.")
    estimator_uri: str | None = Field(
        None, description="estimator: load this trained estimator (directory/prefix) instead of training one."
    )
    seed: int = Field(0, description="random: seed of the per-sample hash (the estimator uses estimator.seed).")
