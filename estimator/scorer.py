"""One scoring interface for the proximity estimator and its baselines, and the factory that builds one.

A curation run only needs ``scorer.score(features, ids)``: higher = closer to the robot data. Which method sits
behind it is one setting (``ScorerConfig.method``); which part of the vector it reads is another
(``ScorerConfig.features``, default the image part: see ``estimator/features.py``). Every fit also runs the
modality-shortcut diagnostic (``estimator/diagnostics.py``) and returns it among its metrics.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.location import Location
from core.settings import StorageConfig
from estimator.baselines import KnnScorer, MeanDistanceScorer, RandomScorer
from estimator.config import ScorerConfig
from estimator.diagnostics import shortcut_diagnostic
from estimator.features import ColumnScorer, columns_for
from estimator.normsim import NormSimScorer
from estimator.probe import as_features, load_estimator, train_estimator


@runtime_checkable
class Scorer(Protocol):
    """Scores feature rows; higher = closer to the robot data. ``ids`` (one per row) lets a scorer key
    per-sample state (the random baseline) so scores do not depend on batching."""

    name: str

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray: ...


def fit_scorer(config: ScorerConfig, robot: np.ndarray, pool_sample: np.ndarray, *, backbone_fingerprint: str,
               parts: dict[str, slice] | None = None, storage: StorageConfig | None = None,
               ) -> tuple[Scorer, dict[str, Any]]:
    """Train (or load) the estimator, or fit a baseline, on the ``config.features`` part of the robot features
    (``parts``: the vector's column slices, ``estimator.features.feature_parts``; None = one unnamed part);
    ``pool_sample`` trains the estimator and the shortcut diagnostic. A loaded estimator must match
    ``backbone_fingerprint`` and the feature width, and keeps the columns it was trained on."""
    t0 = time.perf_counter()
    robot = as_features(robot, name="robot")
    dim = robot.shape[1]
    cols, reads = columns_for(config.features, parts or {"fused": slice(0, dim)}, dim)
    metrics: dict[str, Any] = {"method": config.method, "n_robot": len(robot), "features": reads}
    scorer: Scorer
    if config.method == "estimator" and config.estimator_uri is not None:
        est = load_estimator(Location(config.estimator_uri, storage), expect_fingerprint=backbone_fingerprint,
                             expect_dim=dim)
        metrics |= {"loaded_from": config.estimator_uri, "trained": est.metadata.get("metrics", {}),
                    "columns": f"{est.columns[0]}:{est.columns[1]}"}
        scorer = est
    elif config.method == "estimator":
        scorer, trained = train_estimator(robot, pool_sample, config.estimator,
                                          backbone_fingerprint=backbone_fingerprint, columns=(cols.start, cols.stop))
        metrics |= trained
    elif config.method == "random":
        scorer = RandomScorer(seed=config.seed)
    elif config.method == "mean_distance":
        scorer = ColumnScorer(MeanDistanceScorer(robot[:, cols]), cols)
    elif config.method == "knn":
        scorer = ColumnScorer(KnnScorer(robot[:, cols], k=config.knn_k), cols)
    else:
        scorer = ColumnScorer(NormSimScorer(robot[:, cols], p=config.normsim_p), cols)
    if parts is not None:
        metrics |= shortcut_diagnostic(robot, as_features(pool_sample, name="pool", dim=dim), parts,
                                       config.estimator, scorer_reads=reads)
    metrics["seconds"] = time.perf_counter() - t0
    return scorer, metrics
