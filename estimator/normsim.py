"""A training-free target-similarity score in the style of NormSim (Zhang et al., 2024): the p-norm of a sample's
cosine similarities to every robot embedding.

NormSim_p(x) = (Σ_j max(x̂ · r̂_j, 0)^p)^(1/p) over the L2-normalised robot vectors r̂_j (an opposite
direction is no closeness: negative similarities count as zero). p = 2 rewards samples that are
similar to many robot samples (a soft, target-weighted energy); p = inf is the similarity to the nearest robot
sample. No training, no pool sample: it needs only the robot set, so it cannot learn a text-style gap between
robot and pool — but it also cannot learn which directions matter.
"""

from __future__ import annotations

import faiss
import numpy as np

from estimator.baselines import _unit_rows
from estimator.probe import as_features


class NormSimScorer:
    """NormSim_p over the robot features (exact: faiss inner products on unit vectors)."""

    name = "normsim"

    def __init__(self, robot: np.ndarray, *, p: float = 2.0, max_pairs: int = 1 << 22) -> None:
        if not p >= 1:
            raise ValueError(f"normsim: p must be >= 1 (or inf), got {p}")
        r = _unit_rows(as_features(robot, name="robot"))
        self.p = p
        self.index = faiss.IndexFlatIP(r.shape[1])  # p = inf: a nearest-neighbour search
        self.index.add(r)
        self.robot = r.astype(np.float64)
        self.chunk_rows = max(1, max_pairs // len(r))

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
        x = _unit_rows(as_features(features, name="scored", dim=self.index.d))
        if np.isinf(self.p):
            sims, _ = self.index.search(x, 1)  # the nearest robot sample's similarity
            return sims[:, 0].astype(np.float32)
        out = np.empty(len(x), np.float32)
        for i in range(0, len(x), self.chunk_rows):  # memory near max_pairs floats whatever the pool size
            sims = np.maximum(x[i:i + self.chunk_rows].astype(np.float64) @ self.robot.T, 0.0)
            out[i:i + len(sims)] = (sims ** self.p).sum(axis=1) ** (1.0 / self.p)
        return out
