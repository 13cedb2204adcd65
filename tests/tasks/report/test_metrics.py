"""Metrics against direct double-loop references on small inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.report import diversity, mmd2_rbf, mmd_matrix
from tasks.report.metrics import median_bandwidth, score_quantiles, selection_by_source


def _reference_mmd2(x: np.ndarray, y: np.ndarray, sigma: float, unbiased: bool) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2)))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if not unbiased or i != j)
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if not unbiased or i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    return xx / (m * (m - 1) if unbiased else m * m) + yy / (n * (n - 1) if unbiased else n * n) - 2 * xy / (m * n)


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_double_loop(unbiased: bool) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(5, 3))
    sigma = median_bandwidth(np.concatenate([x, y]))
    expected = _reference_mmd2(x, y, sigma, unbiased)
    assert mmd2_rbf(x, y, unbiased=unbiased) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert mmd2_rbf(x, y, bandwidth=0.7, unbiased=unbiased) == pytest.approx(
        _reference_mmd2(x, y, 0.7, unbiased), rel=1e-9, abs=1e-12
    )


def test_mmd_same_distribution_near_zero_shifted_positive() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    assert abs(mmd2_rbf(a, b)) < 0.02
    shifted = rng.normal(1.0, 1.0, size=(400, 8))
    assert mmd2_rbf(a, shifted) > 0.1
    assert mmd2_rbf(a, b, unbiased=False) >= 0


def test_median_bandwidth_matches_pairwise() -> None:
    z = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert median_bandwidth(z) == pytest.approx(4.0)  # distances 3, 4, 5


def test_mmd_matrix_symmetric_zero_diagonal_common_bandwidth() -> None:
    rng = np.random.default_rng(2)
    sets = {"a": rng.normal(size=(50, 4)), "b": rng.normal(size=(60, 4)), "c": rng.normal(2.0, 1.0, size=(40, 4))}
    df = mmd_matrix(sets)
    m = df.to_numpy()
    assert list(df.index) == list(df.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_array_equal(np.diag(m), 0.0)
    sigma = df.attrs["bandwidth"]
    assert df.loc["a", "c"] == pytest.approx(mmd2_rbf(sets["a"], sets["c"], bandwidth=sigma))
    assert df.loc["a", "c"] > df.loc["a", "b"]


def test_diversity_matches_pairs_and_orders_spread() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = [np.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i in range(6) for j in range(6) if i != j]
    assert diversity(x) == pytest.approx(1 / np.mean(pairs))
    tight = np.ones((50, 5)) + 0.01 * rng.normal(size=(50, 5))
    spread = rng.normal(size=(50, 5))
    assert diversity(tight) < 1.01 < diversity(spread)


def test_score_summaries() -> None:
    df = pd.DataFrame(
        {
            "source": ["a"] * 4 + ["b"] * 6,
            "score": np.arange(10, dtype=np.float32),
            "selected": [False, False, True, True] + [False] * 4 + [True, True],
        }
    )
    q = score_quantiles(df)
    assert {"a", "b", "(all)", "(selected)"} <= set(q.index)
    assert list(q.columns) == ["q05", "q25", "q50", "q75", "q95", "mean"]
    assert q.loc["a", "q50"] == pytest.approx(1.5)
    share = selection_by_source(df)
    assert share.loc["a", "pool"] == 4 and share.loc["b", "selected"] == 2
    assert share["share_of_selection"].sum() == pytest.approx(1.0)
    assert share.loc["a", "share_selected"] == pytest.approx(0.5)
