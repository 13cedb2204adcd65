"""Selection: rank every pool sample by score and keep the global top-K (or a fraction), optionally with
per-source caps. Ties break deterministically by pool order (shards sorted by URI, rows in shard order).

Instead of the hard top-K, ``mode="importance"`` draws K samples without replacement with probability
proportional to the estimated density ratio p_robot/p_pool = exp(logit) (DSIR-style importance resampling): the
Gumbel-top-k trick, seeded, so the draw is one sort like top-K and keeps more of the pool's diversity.

Memory grows with the pool, not with K: about 30 bytes a sample (float32 scores, int16 source codes, the int64 order
and ranks that give every row its rank). The vectors and ids are never held: they stream from the cache.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from core.settings import Settings


class SelectionConfig(Settings):
    """How K samples are chosen from the scored pool."""

    mode: Literal["top_k", "importance"] = Field(
        "top_k", description="top_k: the K highest scores; importance: draw K without replacement with "
        "probability proportional to exp(score), the estimator's density ratio (estimator scorer only)."
    )
    seed: int = Field(0, description="importance: seed of the draw.")
    dedup_threshold: float | None = Field(
        None, gt=0, le=1, description="Drop a sample whose cosine similarity (on the vectors the scorer reads) to "
        "an already selected one reaches this; the next candidates take its place. None = keep duplicates."
    )


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Pool positions sorted from the highest score down (ties: earlier position first)."""
    return np.argsort(-scores, kind="stable")  # stable: equal scores keep pool order


def importance_order(log_weights: np.ndarray, seed: int) -> np.ndarray:
    """Pool positions in the order of a seeded draw without replacement, P ∝ exp(log_weights): sorting
    log_weights + Gumbel noise (Gumbel-top-k) gives exactly that sequential draw; its first K are the sample."""
    gumbel = np.random.default_rng(seed).gumbel(size=len(log_weights))
    return np.argsort(-(log_weights.astype(np.float64) + gumbel), kind="stable")


def ranks_from_order(order: np.ndarray) -> np.ndarray:
    """rank[i] = place of pool position i in ``order`` (0 = highest score)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def resolve_k(pool_size: int, *, k: int | None, fraction: float | None) -> int:
    """The number of samples to keep; raises ``ValueError`` if it cannot be met."""
    if (k is None) == (fraction is None):
        raise ValueError("give exactly one of k and fraction")
    n = k if k is not None else int(round(fraction * pool_size))
    if n > pool_size:
        raise ValueError(f"k={n} is larger than the pool ({pool_size} usable samples)")
    if n < 1:
        raise ValueError(f"selection is empty: k={n} for a pool of {pool_size}")
    return n


def select_top(
    order: np.ndarray, n: int, source_codes: np.ndarray | None = None, caps: dict[int, int] | None = None
) -> np.ndarray:
    """Boolean mask of the ``n`` best pool positions; with ``caps`` (source code -> most samples), a capped
    source stops contributing once full and the next best samples of other sources take its places."""
    selected = np.zeros(len(order), dtype=bool)
    if not caps:
        selected[order[:n]] = True
        return selected
    taken: dict[int, int] = {}
    count = 0
    for position in order:
        code = int(source_codes[position])
        cap = caps.get(code)
        if cap is not None and taken.get(code, 0) >= cap:
            continue
        selected[position] = True
        taken[code] = taken.get(code, 0) + 1
        count += 1
        if count == n:
            break
    if count < n:
        raise ValueError(f"per-source caps leave only {count} samples, fewer than k={n}")
    return selected
