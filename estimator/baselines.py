"""The paper's comparison scorers. Each is fitted on the robot features; higher score = closer to robot data.

They share the ``Scorer`` protocol (``estimator/scorer.py``) with the proximity estimator, so a curation run can
swap one for another with a single setting.
"""

from __future__ import annotations

import hashlib

import faiss
import numpy as np

from estimator.probe import as_features


class RandomScorer:
    """Uniform [0, 1) scores, stable per sample.

    With ``ids``, a sample's score is blake2b(seed, id) mapped to [0, 1): the same whatever the batching, shard
    order or worker, so a random-selection baseline is reproducible across a sharded run. Without ``ids``, the
    hash is taken over the row's bytes instead (identical rows then share a score).
    """

    name = "random"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._key = seed.to_bytes(8, "little", signed=True)

    def _unit(self, payload: bytes) -> float:
        h = int.from_bytes(hashlib.blake2b(payload, digest_size=8, key=self._key).digest(), "little")
        return (h >> 11) / float(1 << 53)  # top 53 bits: exactly representable in a double, always < 1

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
        x = as_features(features, name="scored")
        if ids is not None:
            if len(ids) != len(x):
                raise ValueError(f"random scorer: {len(ids)} ids for {len(x)} feature rows")
            payloads = [str(i).encode() for i in ids]
        else:
            payloads = [row.tobytes() for row in x]
        return np.fromiter((self._unit(p) for p in payloads), dtype=np.float64, count=len(x)).astype(np.float32)


class MeanDistanceScorer:
    """Negative mean L2 distance to the robot features: -mean_j ||x - r_j||.

    This is the mean of the distances (a sqrt per pair, then the mean), not the distance to the robot mean. It
    is computed exactly as sqrt(||x||² - 2 x·r + ||r||²) in float64, in chunks of pool rows so memory stays near
    ``max_pairs`` doubles whatever the pool size.
    """

    name = "mean_distance"

    def __init__(self, robot: np.ndarray, *, max_pairs: int = 1 << 22) -> None:
        self.robot = as_features(robot, name="robot").astype(np.float64)
        self.robot_sq = np.einsum("ij,ij->i", self.robot, self.robot)
        self.chunk_rows = max(1, max_pairs // len(self.robot))

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
        x = as_features(features, name="scored", dim=self.robot.shape[1])
        out = np.empty(len(x), dtype=np.float32)
        for i in range(0, len(x), self.chunk_rows):
            c = x[i:i + self.chunk_rows].astype(np.float64)
            sq = np.einsum("ij,ij->i", c, c)[:, None] - 2.0 * (c @ self.robot.T) + self.robot_sq[None, :]
            np.maximum(sq, 0.0, out=sq)  # rounding can dip just below zero for near-duplicates
            out[i:i + len(c)] = -np.sqrt(sq).mean(axis=1)
        return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32 C-contiguous as faiss wants."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class KnnScorer:
    """Mean cosine similarity to the ``k`` nearest robot features (exact search: faiss ``IndexFlatIP`` on
    L2-normalised vectors, where inner product equals cosine similarity)."""

    name = "knn"

    def __init__(self, robot: np.ndarray, *, k: int = 10) -> None:
        if k < 1:
            raise ValueError(f"knn scorer: k must be >= 1, got {k}")
        r = _unit_rows(as_features(robot, name="robot"))
        self.k = min(k, len(r))  # fewer robot rows than k: average over all of them
        self.index = faiss.IndexFlatIP(r.shape[1])
        self.index.add(r)

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
        x = _unit_rows(as_features(features, name="scored", dim=self.index.d))
        sims, _ = self.index.search(x, self.k)
        return sims.mean(axis=1).astype(np.float32)
