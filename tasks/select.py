"""Selection rules: how many samples to keep, the seeded importance draw, and the walk that applies per-source caps
and near-duplicate removal. ``tasks.distributed_select`` runs them as passes over the ranked pool.

Every rule is written so the outcome depends on the samples only, never on how the pool is cut into tasks:

- top-K keeps the K first samples of the score order (higher score first, ties in pool order);
- ``mode="importance"`` draws K without replacement with probability proportional to the estimated density ratio
  p_robot/p_pool = exp(logit) (DSIR-style importance resampling) by the Gumbel-top-k trick: each sample's draw key is
  its score plus Gumbel noise from a hash of (seed, source, shard, row), so a sample's key is the same whichever
  worker computes it, and sorting the keys is the sequential draw;
- caps and near-duplicate removal walk the chosen order from the top and skip a sample whose source is full or that
  is too close to one already kept, until K are kept (``Picker``).
"""

from __future__ import annotations

from typing import Any, Literal

import faiss
import numpy as np
from pydantic import Field

from core.settings import Settings
from tasks.block_sample import mix, salt


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

    def record(self, duplicates_skipped: int = 0) -> dict[str, Any]:
        """How a run chose its K, as the sidecar and the report record it (seed: None for top_k, which draws
        nothing)."""
        return {
            "mode": self.mode,
            "seed": self.seed if self.mode == "importance" else None,
            "dedup_threshold": self.dedup_threshold,
            "duplicates_skipped": duplicates_skipped,
        }


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


def draw_keys(log_weights: np.ndarray, *, seed: int, source: str, shard: str) -> np.ndarray:
    """Gumbel-top-k keys of one shard's rows (entry order), float32: sorting a pool's keys from the highest down is
    a seeded draw without replacement with P ∝ exp(log_weights). The noise of a row comes from a hash of the seed,
    its source, its shard and its row, so it never depends on the rest of the pool or on who computes it."""
    bits = mix(np.arange(len(log_weights), dtype=np.uint64), salt(seed, f"importance/{source}/{shard}"))
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1), never 0 or 1
    return (np.asarray(log_weights, np.float64) - np.log(-np.log(uniform))).astype(np.float32)


class Picker:
    """Walks candidates in selection order, chunk by chunk, and keeps the first ``n`` that fit: a candidate whose
    source already holds its cap (``caps``: source name -> most samples) is skipped; with ``dedup_threshold``, so is
    one whose cosine similarity to a kept sample reaches it (counted in ``duplicates``). Its memory grows with the
    kept set (their vectors, for faiss inner products), never with the pool."""

    def __init__(self, n: int, *, caps: dict[str, int] | None = None, dedup_threshold: float | None = None) -> None:
        self.n, self.caps, self.threshold = n, caps or {}, dedup_threshold
        self.taken: dict[str, int] = {}
        self.kept = self.duplicates = 0
        self._index: faiss.IndexFlatIP | None = None

    @property
    def done(self) -> bool:
        return self.kept == self.n

    def offer(self, sources: list[str], vectors: np.ndarray | None = None) -> np.ndarray:
        """Indices of the candidates kept from one chunk (in order; ``vectors``: their rows, needed for dedup)."""
        if self.threshold is not None:
            if vectors is None:
                raise ValueError("near-duplicate removal needs the candidates' vectors")
            x = _unit(vectors)
            self._index = self._index or faiss.IndexFlatIP(x.shape[1])
            near_kept = self._index.search(x, 1)[0][:, 0] >= self.threshold if self._index.ntotal else None
            within = x @ x.T
        accepted: list[int] = []
        for j, source in enumerate(sources):
            if self.done:
                break
            cap = self.caps.get(source)
            if cap is not None and self.taken.get(source, 0) >= cap:
                continue
            if self.threshold is not None and (
                (near_kept is not None and near_kept[j]) or (accepted and within[j, accepted].max() >= self.threshold)
            ):
                self.duplicates += 1
                continue
            accepted.append(j)
            self.taken[source] = self.taken.get(source, 0) + 1
            self.kept += 1
        if self.threshold is not None and accepted:
            self._index.add(x[accepted])
        return np.asarray(accepted, np.int64)

    def shortfall(self) -> ValueError:
        """The error for a pool the caps and dedup leave short of ``n``."""
        rules = " and ".join(r for r, on in (("per-source caps", self.caps),
                                              (f"near-duplicate removal (threshold {self.threshold})",
                                               self.threshold is not None)) if on)
        return ValueError(f"{rules or 'the filters'} leave only {self.kept} samples, fewer than k={self.n}")


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)
