"""Near-duplicate removal inside the selection: walk the candidates in selection order and keep one only if its
cosine similarity to every sample kept so far stays below a threshold, until K are kept.

Web pools repeat themselves (re-uploads, crops, templated pages); a proximity score ranks copies side by side, so
the top-K can spend much of its budget on one picture. The check runs on the cached vectors the scorer reads
(faiss inner product on unit vectors against the kept set, then a small within-chunk matrix), reading only the
candidates' shards, chunk by chunk, so memory grows with K, not with the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from tasks.cache import EmbeddingCache, vectors
from tasks.score import CachedShard, entry_rows

CHUNK = 1024  # candidates checked against each other as one matrix


@dataclass
class PoolVectors:
    """Vectors of pool positions (pool order: shards in order, rows in shard order), read from the cache."""

    cache: EmbeddingCache
    shards: list[CachedShard]
    columns: slice

    def __post_init__(self) -> None:
        self.starts = np.cumsum([0] + [entry_rows(self.cache, s) for s in self.shards])

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        shard_of = np.searchsorted(self.starts, positions, side="right") - 1
        out = None
        for s in np.unique(shard_of):
            at = np.flatnonzero(shard_of == s)
            x = vectors(self.cache.read(self.shards[s].entry, columns=["embedding"]))[:, self.columns]
            out = np.empty((len(positions), x.shape[1]), np.float32) if out is None else out
            out[at] = x[positions[at] - self.starts[s]]
        return out if out is not None else np.zeros((0, 0), np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)


def dedup_select(order: np.ndarray, n: int, read: Callable[[np.ndarray], np.ndarray], threshold: float, *,
                 source_codes: np.ndarray | None = None, caps: dict[int, int] | None = None,
                 ) -> tuple[np.ndarray, int]:
    """Mask of the first ``n`` positions of ``order`` that are not near-duplicates (cosine ≥ ``threshold``) of
    an earlier kept one and fit the per-source ``caps``; and how many near-duplicates were passed over."""
    selected = np.zeros(len(order), dtype=bool)
    index: faiss.IndexFlatIP | None = None
    taken: dict[int, int] = {}
    kept = dropped = 0
    for start in range(0, len(order), CHUNK):
        chunk = order[start:start + CHUNK]
        x = _unit(read(chunk))
        index = index or faiss.IndexFlatIP(x.shape[1])
        near_kept = index.search(x, 1)[0][:, 0] >= threshold if index.ntotal else np.zeros(len(x), bool)
        within = x @ x.T
        accepted: list[int] = []
        for j, position in enumerate(chunk):
            code = int(source_codes[position]) if caps else -1
            if caps and caps.get(code) is not None and taken.get(code, 0) >= caps[code]:
                continue
            if near_kept[j] or (accepted and within[j, accepted].max() >= threshold):
                dropped += 1
                continue
            accepted.append(j)
            selected[position] = True
            taken[code] = taken.get(code, 0) + 1
            kept += 1
            if kept == n:
                return selected, dropped
        if accepted:
            index.add(x[accepted])
    raise ValueError(f"near-duplicate removal (threshold {threshold}) and caps leave only {kept} samples, "
                     f"fewer than k={n}")
