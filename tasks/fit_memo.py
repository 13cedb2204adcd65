"""The proximity estimator kept by what it was fitted on.

A fit is a function of the cached vectors it reads (cache entries are named by their shard's content and the backbone,
so their URIs name the vectors), the pool sample's size, the scorer's settings and the fitting code. A re-run whose
inputs are all unchanged — a re-curation with another K, selection mode, cap or vector filter, or a scheduled run on
a pool that did not grow — loads the estimator fitted before instead of training it again.

Kept under ``{cache root}/{fingerprint}/estimators/{digest}/``: the estimator as ``save_estimator`` writes it, then
``fit_metrics.json`` (last: it marks the fit complete). Deleting the folder costs a refit, nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch

import estimator
import tasks.block_sample
import tasks.score
from core.digest import content_digest, source_digest
from core.location import Location
from estimator.probe import ProximityEstimator, load_estimator, save_estimator
from estimator.scorer import Scorer, ScorerConfig
from tasks.cache import EmbeddingCache
from tasks.score import CachedShard

METRICS_FILE = "fit_metrics.json"


def fit_location(cache: EmbeddingCache, robot: list[CachedShard], pool: list[CachedShard], config: ScorerConfig, *,
                 train_pool_samples: int, parts: dict[str, slice]) -> Location | None:
    """Where the estimator fitted on these inputs is kept; None for a scorer that is not trained here (a baseline,
    or an estimator loaded from ``estimator_uri``)."""
    if config.method != "estimator" or config.estimator_uri is not None:
        return None
    code = source_digest(estimator, tasks.score, tasks.block_sample)
    key = content_digest(
        "fit", cache.fingerprint, sorted(s.entry.uri for s in robot), sorted(s.entry.uri for s in pool),
        train_pool_samples, config.model_dump(mode="json"), {k: [v.start, v.stop] for k, v in parts.items()},
        code, torch.__version__,
    )
    return cache.root.join(cache.fingerprint, "estimators", key[:32])


def kept_fit(where: Location | None, fit: Callable[[], tuple[Scorer, dict[str, Any]]], *, fingerprint: str,
             dim: int) -> tuple[Scorer, dict[str, Any]]:
    """``fit()``, or the estimator and metrics it gave before at ``where`` (their ``reused_fit`` names it and
    ``seconds`` is the load's); a fit made now is kept there."""
    if where is None:
        return fit()
    start = time.perf_counter()
    try:
        metrics = json.loads(where.join(METRICS_FILE).read_bytes())
    except FileNotFoundError:
        scorer, metrics = fit()
        if isinstance(scorer, ProximityEstimator):
            save_estimator(scorer, where)
            where.join(METRICS_FILE).publish_bytes(json.dumps(metrics, sort_keys=True, default=str).encode())
        return scorer, metrics
    scorer = load_estimator(where, expect_fingerprint=fingerprint, expect_dim=dim)
    return scorer, metrics | {"reused_fit": where.uri, "seconds": time.perf_counter() - start}
