"""The proximity estimator on synthetic Gaussian features: it separates, stops early, is deterministic, ranks like
the density ratio, and round-trips through safetensors + JSON without pickle."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from estimator.probe import (
    EstimatorConfig,
    ProximityEstimator,
    balanced_batch,
    load_estimator,
    roc_auc,
    save_estimator,
    train_estimator,
)

DIM = 16
FP = "backbone-a"


def gaussians(seed: int, n_robot: int = 400, n_pool: int = 2000, shift: float = 1.5) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    robot = rng.normal(size=(n_robot, DIM)).astype(np.float32) + shift
    pool = rng.normal(size=(n_pool, DIM)).astype(np.float32)
    return robot, pool


@pytest.fixture(scope="module")
def trained() -> tuple[ProximityEstimator, dict]:
    robot, pool = gaussians(0)
    return train_estimator(robot, pool, EstimatorConfig(lr=1e-2), backbone_fingerprint=FP)


def test_separates_and_stops_early(trained: tuple[ProximityEstimator, dict]) -> None:
    est, m = trained
    assert m["val_accuracy"] >= 0.9 and m["reached_target"] and m["stopped_early"]
    assert 50 <= m["steps"] < 2000
    assert m["n_train_robot"] + m["n_val_robot"] == 400 and m["n_val_pool"] == 400
    robot_test, pool_test = gaussians(1, n_robot=300, n_pool=300)
    s_r, s_p = est.score(robot_test), est.score(pool_test)
    assert s_r.dtype == np.float32 and s_r.shape == (300,)
    assert roc_auc(s_r, s_p) > 0.95


def test_deterministic_from_seed() -> None:
    robot, pool = gaussians(2)
    cfg = EstimatorConfig(lr=1e-2, seed=3)
    a, ma = train_estimator(robot, pool, cfg, backbone_fingerprint=FP)
    b, mb = train_estimator(robot, pool, cfg, backbone_fingerprint=FP)
    for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(ta, tb)
    ma.pop("seconds"), mb.pop("seconds")
    assert ma == mb
    c, _ = train_estimator(robot, pool, cfg.model_copy(update={"seed": 4}), backbone_fingerprint=FP)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_training_leaves_global_rng_alone() -> None:
    robot, pool = gaussians(2, n_robot=50, n_pool=50)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_estimator(robot, pool, EstimatorConfig(max_steps=5), backbone_fingerprint=FP)
    assert torch.equal(torch.rand(3), expected)


def test_mlp_head() -> None:
    robot, pool = gaussians(5)
    est, m = train_estimator(robot, pool, EstimatorConfig(head="mlp", hidden_dim=32, lr=1e-2),
                             backbone_fingerprint=FP)
    assert m["val_accuracy"] >= 0.9 and m["stopped_early"]
    assert isinstance(est.head, torch.nn.Sequential)


def test_balanced_batch_is_half_and_half() -> None:
    robot, pool = torch.full((3, 2), 1.0), torch.full((500, 2), -1.0)
    x, y = balanced_batch(robot, pool, 128, torch.Generator().manual_seed(0))
    assert x.shape == (128, 2) and int(y.sum()) == 64
    assert torch.all(x[y == 1] == 1.0) and torch.all(x[y == 0] == -1.0)  # labels match the rows' class
    x2, _ = balanced_batch(robot, pool, 128, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_scores_rank_like_the_density_ratio_1d() -> None:
    # N(1,1) vs N(0,1): log p_robot/p_pool = x - 1/2, linear and increasing in x.
    rng = np.random.default_rng(0)
    robot = rng.normal(1.0, 1.0, size=(2000, 1)).astype(np.float32)
    pool = rng.normal(0.0, 1.0, size=(2000, 1)).astype(np.float32)
    est, m = train_estimator(robot, pool, EstimatorConfig(lr=0.05, max_steps=400), backbone_fingerprint=FP)
    assert not m["stopped_early"] and m["steps"] == 400  # Bayes accuracy is ~0.69: the target is never met
    grid = np.linspace(-3, 3, 61, dtype=np.float32)[:, None]
    scores = est.score(grid)
    ranks = np.argsort(np.argsort(scores))
    spearman = np.corrcoef(ranks, np.arange(len(grid)))[0, 1]
    assert spearman == pytest.approx(1.0) and np.all(np.diff(scores) > 0)
    slope, intercept = np.polyfit(grid[:, 0], est.logits(grid), 1)
    assert slope == pytest.approx(1.0, abs=0.3) and intercept == pytest.approx(-0.5, abs=0.3)


def test_save_load_round_trip(tmp_path, trained: tuple[ProximityEstimator, dict]) -> None:
    est, m = trained
    uri = str(tmp_path / "est")
    save_estimator(est, uri)
    loaded = load_estimator(uri, expect_fingerprint=FP, expect_dim=DIM)
    x = gaussians(9, n_robot=10, n_pool=10)[1]
    np.testing.assert_array_equal(loaded.score(x), est.score(x))
    meta = json.loads((tmp_path / "est" / "estimator.json").read_text())
    assert meta["backbone_fingerprint"] == FP and meta["embed_dim"] == DIM and meta["head"] == "linear"
    assert meta["metrics"]["val_accuracy"] == m["val_accuracy"] and meta["counts"] == {"n_robot": 400,
                                                                                       "n_pool": 2000}
    assert meta["config"]["batch_size"] == 128 and meta["format_version"] == 1
    assert loaded.metadata["metrics"]["steps"] == m["steps"]

    raw = (tmp_path / "est" / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])  # safetensors: 8-byte header length, JSON header, raw tensor bytes
    header = json.loads(raw[8:8 + n])
    assert set(header) >= {"mean", "std", "head.weight", "head.bias"}
    assert header["__metadata__"]["backbone_fingerprint"] == FP
    assert not raw.startswith(b"\x80") and b"torch._utils" not in raw  # no pickle anywhere


def test_load_refuses_other_backbone_or_dim(tmp_path, trained: tuple[ProximityEstimator, dict]) -> None:
    uri = str(tmp_path / "est")
    save_estimator(trained[0], uri)
    with pytest.raises(ValueError, match="trained on backbone 'backbone-a'.*embeds with 'backbone-b'"):
        load_estimator(uri, expect_fingerprint="backbone-b")
    with pytest.raises(ValueError, match="expects 16-d features.*32-d"):
        load_estimator(uri, expect_dim=32)


@pytest.mark.parametrize(
    ("robot", "pool", "match"),
    [
        (np.zeros((0, 4)), np.zeros((5, 4)), "robot features must be a non-empty"),
        (np.zeros((5, 4)), np.zeros((0, 4)), "pool features must be a non-empty"),
        (np.zeros((5, 4)), np.zeros((5, 3)), "pool features are 3-d but 4-d"),
        (np.zeros((1, 4)), np.zeros((5, 4)), "robot features: need at least 2 samples"),
    ],
)
def test_bad_input(robot: np.ndarray, pool: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_estimator(robot, pool, EstimatorConfig(), backbone_fingerprint=FP)


def test_config_rejects_odd_batch_and_bad_target() -> None:
    with pytest.raises(ValidationError, match="even"):
        EstimatorConfig(batch_size=7)
    with pytest.raises(ValidationError):
        EstimatorConfig(target_val_accuracy=1.5)


def test_roc_auc_with_ties() -> None:
    assert roc_auc(np.array([1.0, 2.0]), np.array([0.0, 0.5])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5


def test_confident_scores_do_not_tie() -> None:
    """float32 sigmoid saturates to exactly 1.0 from a logit of ~17: ranked by it, confident samples tied and fell
    back to pool order. The score is the logit, which keeps them in order."""
    est = ProximityEstimator(embed_dim=1)
    with torch.no_grad():
        est.head.weight.fill_(1.0)
        est.head.bias.zero_()
    x = np.array([[18.0], [30.0], [20.0], [25.0]], np.float32)
    sigmoid = torch.sigmoid(torch.from_numpy(est.logits(x)).double()).numpy().astype(np.float32)
    assert np.all(sigmoid == 1.0)  # the tie, reproduced
    assert np.argsort(-sigmoid, kind="stable").tolist() == [0, 1, 2, 3]  # pool order, not confidence
    scores = est.score(x)
    assert scores.dtype == np.float32 and len(set(scores.tolist())) == 4
    assert np.argsort(-scores, kind="stable").tolist() == [1, 3, 2, 0]


def test_columns_train_score_and_persist(tmp_path) -> None:
    """An estimator on some columns (the image part) ignores the others, at training and scoring, and keeps them."""
    robot, pool = gaussians(3)
    noise = np.random.default_rng(0).normal(size=(len(robot) + len(pool), DIM)).astype(np.float32)
    robot_x = np.hstack([robot, noise[:len(robot)] + 5.0])  # the second half separates too: a shortcut
    pool_x = np.hstack([pool, noise[len(robot):]])
    est, _ = train_estimator(robot_x, pool_x, EstimatorConfig(lr=1e-2), backbone_fingerprint=FP, columns=(0, DIM))
    assert est.head.weight.shape == (1, DIM) and est.columns == (0, DIM) and est.embed_dim == 2 * DIM
    moved = robot_x.copy()
    moved[:, DIM:] = -100.0  # the unread columns change nothing
    np.testing.assert_array_equal(est.score(moved), est.score(robot_x))
    save_estimator(est, str(tmp_path / "est"))
    loaded = load_estimator(str(tmp_path / "est"), expect_dim=2 * DIM)
    assert loaded.columns == (0, DIM)
    np.testing.assert_array_equal(loaded.score(robot_x), est.score(robot_x))
