"""Distribution metrics over embedding sets: squared MMD (RBF kernel), diversity, score summaries.

Pure numpy/pandas; every function takes plain arrays or a manifest DataFrame (score summaries: ``scores.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist, pdist

from tasks.report.scores import ScoreSummary


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cdist(np.asarray(a, np.float64), np.asarray(b, np.float64), "sqeuclidean")


def median_bandwidth(z: np.ndarray, *, max_rows: int = 2000, seed: int = 0) -> float:
    """The median heuristic: the median pairwise Euclidean distance between rows of ``z`` (at most ``max_rows``
    rows, sampled with ``seed``). Falls back to 1.0 when every distance is zero."""
    z = np.asarray(z, np.float64)
    if len(z) > max_rows:
        z = z[np.random.default_rng(seed).choice(len(z), max_rows, replace=False)]
    if len(z) < 2:
        return 1.0
    median = float(np.median(pdist(z)))
    return median if median > 0 else 1.0


def mmd2_rbf(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy between samples ``x`` [m, d] and ``y`` [n, d] with the RBF kernel
    k(a, b) = exp(-||a - b||² / (2σ²)).

    σ = ``bandwidth``, or the median heuristic over the pooled sample x ∪ y when None. By default this is the
    unbiased U-statistic (within-set diagonals excluded; it can be slightly negative when x and y share a
    distribution); ``unbiased=False`` gives the biased V-statistic (all pairs, always >= 0).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if unbiased and (m < 2 or n < 2):
        raise ValueError("the unbiased MMD needs at least two rows in each set")
    sigma = bandwidth if bandwidth is not None else median_bandwidth(np.concatenate([x, y]))
    gamma = 1.0 / (2.0 * sigma**2)
    kxx = np.exp(-gamma * _sq_dists(x, x))
    kyy = np.exp(-gamma * _sq_dists(y, y))
    kxy = np.exp(-gamma * _sq_dists(x, y))
    if unbiased:
        xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return float(xx + yy - 2.0 * kxy.mean())


def common_bandwidth(sets: dict[str, np.ndarray], *, per_set: int = 200, seed: int = 0) -> float:
    """One median-heuristic σ over the union of up to ``per_set`` rows from every set."""
    rng = np.random.default_rng(seed)
    parts = [s if len(s) <= per_set else s[rng.choice(len(s), per_set, replace=False)] for s in sets.values()]
    return median_bandwidth(np.concatenate([p for p in parts if len(p)]), seed=seed)


def mmd_matrix(sets: dict[str, np.ndarray], *, bandwidth: float | None = None, unbiased: bool = True) -> pd.DataFrame:
    """Squared MMD between every pair of sets (with >= 2 rows), as a symmetric DataFrame with a zero diagonal;
    the σ used is in ``df.attrs["bandwidth"]``.

    All entries share ONE bandwidth (given, or the median heuristic over a subsample of the union of all sets),
    so the entries are comparable with each other; a per-pair σ would rescale every cell differently.
    """
    names = [k for k, v in sets.items() if len(v) >= 2]
    sigma = bandwidth if bandwidth is not None else common_bandwidth({k: sets[k] for k in names})
    out = pd.DataFrame(0.0, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out.loc[a, b] = out.loc[b, a] = mmd2_rbf(sets[a], sets[b], bandwidth=sigma, unbiased=unbiased)
    out.attrs["bandwidth"] = float(sigma)
    out.attrs["unbiased"] = unbiased
    return out


def diversity(x: np.ndarray) -> float:
    """1 / E[exp(-2 ||u - v||²)] over pairs u ≠ v of L2-normalised rows: the inverse of Wang & Isola's
    uniformity. 1.0 for identical rows; larger means more spread over the sphere."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return float("nan")
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return float(1.0 / np.mean(np.exp(-2.0 * pdist(u, "sqeuclidean"))))


def score_quantiles(manifest: pd.DataFrame) -> pd.DataFrame:
    """Score quantiles (q05 .. q95) and mean per source, plus an ``(all)`` row and a ``(selected)`` row, of a manifest
    DataFrame held whole (a report streams its manifest into a ``ScoreSummary`` instead)."""
    return ScoreSummary.of(manifest).quantiles()


def selection_by_source(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per source: pool count, selected count and shares (``ScoreSummary.by_source``) of a manifest DataFrame."""
    return ScoreSummary.of(manifest).by_source()
