"""Pool-wide dedup on what the cache already holds: exact copies by content hash first, then SemDeDup's semantic
near-duplicates (Abbas et al., 2023) — the unit vectors clustered with spherical k-means, and within each cluster a
sample dropped when it is closer than ``threshold`` (cosine) to a sample nearer the cluster's centre. Each
cluster is compared in row blocks, so memory is one block against its cluster, not the pool squared. The selection
engine runs them as passes (``tasks.filter_passes``).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from core.settings import Settings

_BLOCK = 1024  # rows of a cluster compared at once against the rows before them


class DedupConfig(Settings):
    """Pool-wide dedup (off unless ``enabled``)."""

    enabled: bool = Field(False, description="Remove exact copies and semantic near-duplicates across the pool.")
    threshold: float = Field(
        0.95, gt=0, le=1, description="Cosine above which two samples count as the same (SemDeDup's 1 - eps).")
    clusters: int | None = Field(
        None, ge=1, description="k-means clusters; None = about sqrt(pool size / 4), so clusters hold a few hundred.")
    seed: int = Field(0, description="k-means seed (the result is the same for the same pool and seed).")


def later_copies(hashes: np.ndarray) -> np.ndarray:
    """Whether each row's content hash is an earlier row's (the first of each hash is not a copy)."""
    _, first = np.unique(hashes, return_index=True)
    copy = np.ones(len(hashes), bool)
    copy[first] = False
    return copy


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cluster_duplicates(x: np.ndarray, threshold: float) -> np.ndarray:
    """Within one cluster ordered nearest-centre first: for each row, the earliest earlier row above
    ``threshold``, else -1."""
    n = len(x)
    of = np.full(n, -1, np.int64)
    for start in range(1, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        sims = x[start:stop] @ x[:stop].T  # [block, rows so far]
        sims[np.arange(stop - start)[:, None] <= np.arange(stop)[None, :] - start] = -np.inf  # only earlier rows
        over = sims > threshold
        hit = over.any(axis=1)
        of[start:stop][hit] = over[hit].argmax(axis=1)
    return of
