"""Baseline scorers against brute-force numpy, and the scorer factory (train, load, baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from estimator.baselines import KnnScorer, MeanDistanceScorer, RandomScorer
from estimator.probe import EstimatorConfig, save_estimator, train_estimator
from estimator.scorer import Scorer, ScorerConfig, fit_scorer


def small(seed: int = 0, n: int = 30, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.normal(size=(2 * n, dim)).astype(np.float32)


def test_mean_distance_matches_brute_force() -> None:
    robot, x = small()
    brute = -np.linalg.norm(x[:, None, :].astype(np.float64) - robot[None, :, :], axis=2).mean(axis=1)
    got = MeanDistanceScorer(robot, max_pairs=70).score(x)  # 2 rows per chunk: exercises the chunking
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, brute, rtol=1e-6)
    to_mean = -np.linalg.norm(x - robot.mean(0), axis=1)  # the distance to the mean is a different quantity
    assert not np.allclose(got, to_mean)


def test_knn_matches_brute_force_cosine() -> None:
    robot, x = small(1)
    k = 5
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (robot / np.linalg.norm(robot, axis=1,
                                                                                    keepdims=True)).T
    brute = np.sort(cos, axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(KnnScorer(robot, k=k).score(x), brute, atol=1e-5)
    np.testing.assert_allclose(KnnScorer(robot[:3], k=k).score(x),
                               np.sort(cos[:, :3], axis=1).mean(axis=1), atol=1e-5)  # k capped at n_robot


def test_random_is_stable_per_id_and_seeded() -> None:
    _, x = small(2)
    ids = [f"pool/{i:05d}" for i in range(len(x))]
    whole = RandomScorer(seed=1).score(x, ids)
    split = np.concatenate([RandomScorer(seed=1).score(x[i:i + 7], ids[i:i + 7]) for i in range(0, len(x), 7)])
    np.testing.assert_array_equal(whole, split)
    rev = RandomScorer(seed=1).score(x[::-1], ids[::-1])
    np.testing.assert_array_equal(rev[::-1], whole)
    assert not np.array_equal(whole, RandomScorer(seed=2).score(x, ids))
    assert np.all((whole >= 0) & (whole < 1)) and whole.std() > 0.1
    np.testing.assert_array_equal(RandomScorer(seed=1).score(x), RandomScorer(seed=1).score(x))
    with pytest.raises(ValueError, match="ids"):
        RandomScorer().score(x, ids[:3])


@pytest.mark.parametrize("method", ["estimator", "mean_distance", "knn", "normsim"])
def test_shifted_cluster_ranks_above_far_one(method: str) -> None:
    rng = np.random.default_rng(3)
    center = np.full(8, 3.0, dtype=np.float32)
    robot = rng.normal(size=(200, 8)).astype(np.float32) + center
    near = rng.normal(size=(100, 8)).astype(np.float32) + center + 0.5
    far = rng.normal(size=(100, 8)).astype(np.float32) - center
    pool = np.concatenate([near[:50], far[:50], rng.normal(size=(400, 8)).astype(np.float32)])
    cfg = ScorerConfig(method=method, knn_k=5, estimator=EstimatorConfig(lr=1e-2))
    scorer, metrics = fit_scorer(cfg, robot, pool, backbone_fingerprint="fp")
    assert isinstance(scorer, Scorer) and scorer.name == method and metrics["method"] == method
    assert scorer.score(near[50:]).min() > scorer.score(far[50:]).max()


def test_fit_scorer_loads_estimator_and_checks_fingerprint(tmp_path) -> None:
    robot, pool = small(4, n=100)
    est, _ = train_estimator(robot + 2, pool, EstimatorConfig(max_steps=50), backbone_fingerprint="fp-1")
    uri = str(tmp_path / "est")
    save_estimator(est, uri)
    cfg = ScorerConfig(estimator_uri=uri)
    scorer, metrics = fit_scorer(cfg, robot, pool, backbone_fingerprint="fp-1")
    assert metrics["loaded_from"] == uri and metrics["trained"]["steps"] == 50
    np.testing.assert_array_equal(scorer.score(pool), est.score(pool))
    with pytest.raises(ValueError, match="'fp-1'.*'fp-2'"):
        fit_scorer(cfg, robot, pool, backbone_fingerprint="fp-2")
    with pytest.raises(ValueError, match="8-d features.*4-d"):
        fit_scorer(cfg, robot[:, :4], pool, backbone_fingerprint="fp-1")


def test_fit_scorer_rejects_empty_robot() -> None:
    with pytest.raises(ValueError, match="robot features must be a non-empty"):
        fit_scorer(ScorerConfig(method="knn"), np.zeros((0, 8)), np.zeros((4, 8)), backbone_fingerprint="fp")
