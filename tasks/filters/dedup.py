"""Pool-wide dedup on what the cache already holds: exact copies by content hash first, then SemDeDup's semantic
near-duplicates (Abbas et al., 2023) — the unit vectors clustered with faiss k-means, and within each cluster a
sample dropped when it is closer than ``threshold`` (cosine) to a sample nearer the cluster's centre. Each
cluster is compared in row blocks, so memory is one block against its cluster, not the pool squared.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
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


@dataclass(frozen=True)
class Duplicates:
    """For every row: whether it is kept, and the row it duplicates (-1 when kept)."""

    keep: np.ndarray
    duplicate_of: np.ndarray
    reason: np.ndarray  # "" kept, "dedup:exact" or "dedup:semantic"


def exact_copies(hashes: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same content hash (itself when it is the first)."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    return first[inverse]


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


def find_duplicates(vectors: np.ndarray, config: DedupConfig, hashes: np.ndarray | None = None) -> Duplicates:
    """Exact copies (same ``hashes``) and semantic near-duplicates of ``vectors`` [N, D]; one of each group is
    kept: the first copy, and within a cluster the sample nearest its centre."""
    n = len(vectors)
    duplicate_of = np.full(n, -1, np.int64)
    reason = np.full(n, "", dtype=object)
    if hashes is not None:
        first = exact_copies(hashes)
        copy = first != np.arange(n)
        duplicate_of[copy], reason[copy] = first[copy], "dedup:exact"
    rest = np.flatnonzero(duplicate_of < 0)
    if len(rest) > 1:
        x = unit_rows(vectors[rest])
        k = min(config.clusters or max(1, round((len(rest) / 4) ** 0.5)), len(rest))
        kmeans = faiss.Kmeans(x.shape[1], k, niter=20, seed=config.seed, spherical=True, verbose=False)
        kmeans.train(x)
        distance, label = kmeans.index.search(x, 1)
        for c in range(k):
            members = np.flatnonzero(label[:, 0] == c)
            members = members[np.lexsort((rest[members], distance[members, 0]))]  # nearest centre first, ties by row
            of = cluster_duplicates(x[members], config.threshold)
            dup = of >= 0
            rows = rest[members]
            duplicate_of[rows[dup]], reason[rows[dup]] = rows[of[dup]], "dedup:semantic"
    return Duplicates(keep=duplicate_of < 0, duplicate_of=duplicate_of, reason=reason)
