"""One scoring interface for the proximity estimator and its baselines, and the factory that builds one.

A curation run only needs ``scorer.score(features, ids)``: higher = closer to the robot data. Which method sits
behind it is one setting (``ScorerConfig.method``).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from core.settings import Settings, StorageConfig
from estimator.baselines import KnnScorer, MeanDistanceScorer, RandomScorer
from estimator.probe import EstimatorConfig, as_features, load_estimator, train_estimator


@runtime_checkable
class Scorer(Protocol):
    """Scores feature rows; higher = closer to the robot data. ``ids`` (one per row) lets a scorer key
    per-sample state (the random baseline) so scores do not depend on batching."""

    name: str

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray: ...


class ScorerConfig(Settings):
    """Which scorer ranks the pool."""

    method: Literal["estimator", "random", "mean_distance", "knn"] = Field(
        "estimator", description="estimator: the trained proximity estimator (the recipe); the rest are the "
        "paper's baselines: random, negative mean L2 distance to robot features, mean cosine to k nearest."
    )
    knn_k: int = Field(10, ge=1, description="knn: number of nearest robot features averaged.")
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig, description="estimator: training settings.")
    estimator_uri: str | None = Field(
        None, description="estimator: load this trained estimator (directory/prefix) instead of training one."
    )
    seed: int = Field(0, description="random: seed of the per-sample hash (the estimator uses estimator.seed).")


def fit_scorer(config: ScorerConfig, robot: np.ndarray, pool_sample: np.ndarray, *, backbone_fingerprint: str,
               storage: StorageConfig | None = None) -> tuple[Scorer, dict[str, Any]]:
    """Train (or load) the estimator, or fit a baseline, on robot features; ``pool_sample`` is used only to
    train the estimator. A loaded estimator must match ``backbone_fingerprint`` and the feature width."""
    t0 = time.perf_counter()
    robot = as_features(robot, name="robot")
    metrics: dict[str, Any] = {"method": config.method, "n_robot": len(robot)}
    scorer: Scorer
    if config.method == "estimator" and config.estimator_uri is not None:
        est = load_estimator(config.estimator_uri, storage, expect_fingerprint=backbone_fingerprint,
                             expect_dim=robot.shape[1])
        metrics |= {"loaded_from": config.estimator_uri, "trained": est.metadata.get("metrics", {})}
        scorer = est
    elif config.method == "estimator":
        scorer, trained = train_estimator(robot, pool_sample, config.estimator,
                                          backbone_fingerprint=backbone_fingerprint)
        metrics |= trained
    elif config.method == "random":
        scorer = RandomScorer(seed=config.seed)
    elif config.method == "mean_distance":
        scorer = MeanDistanceScorer(robot)
    else:
        scorer = KnnScorer(robot, k=config.knn_k)
    metrics["seconds"] = time.perf_counter() - t0
    return scorer, metrics
