"""NormSim against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest

from estimator.normsim import NormSimScorer


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_normsim_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    robot, x = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(25, 8)).astype(np.float32)
    cos = _unit(x.astype(np.float64)) @ _unit(robot.astype(np.float64)).T
    got = NormSimScorer(robot, p=2, max_pairs=80).score(x)  # 2 rows per chunk: exercises the chunking
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.sqrt((np.maximum(cos, 0) ** 2).sum(axis=1)), rtol=1e-5)
    np.testing.assert_allclose(NormSimScorer(robot, p=np.inf).score(x), cos.max(axis=1), atol=1e-5)


def test_normsim_prefers_samples_near_many_robot_samples() -> None:
    rng = np.random.default_rng(1)
    robot = np.vstack([rng.normal(size=(95, 6)) * 0.1 + [3, 0, 0, 0, 0, 0],
                       rng.normal(size=(5, 6)) * 0.1 + [0, 3, 0, 0, 0, 0]]).astype(np.float32)
    common, rare = np.array([[3, 0, 0, 0, 0, 0]], np.float32), np.array([[0, 3, 0, 0, 0, 0]], np.float32)
    two = NormSimScorer(robot, p=2)
    assert two.score(common)[0] > two.score(rare)[0]  # p = 2 weighs by how much of the target is near
    inf = NormSimScorer(robot, p=np.inf)
    assert inf.score(common)[0] == pytest.approx(inf.score(rare)[0], abs=0.02)  # p = inf: nearest only
    with pytest.raises(ValueError, match="p must be"):
        NormSimScorer(robot, p=0.5)
