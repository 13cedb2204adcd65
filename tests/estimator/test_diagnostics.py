"""The shortcut diagnostic: flags a text part that separates robot from pool where the image part does not."""

from __future__ import annotations

import numpy as np

from estimator.diagnostics import shortcut_diagnostic
from estimator.features import ColumnScorer, columns_for, feature_parts
from estimator.probe import EstimatorConfig
from estimator.scorer import ScorerConfig, fit_scorer

PARTS = feature_parts("open_clip", "image+text", 16)


def vectors(text_leaks: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image halves that overlap (robot shifted by 0.5 sd), text halves that separate only when ``text_leaks``."""
    rng = np.random.default_rng(seed)
    robot, pool = rng.normal(size=(200, 16)), rng.normal(size=(600, 16))
    robot[:, :8] += 0.5
    if text_leaks:
        robot[:, 8:] += 3.0
    return robot.astype(np.float32), pool.astype(np.float32)


def test_parts_of_each_kind() -> None:
    assert {"image": slice(0, 8), "text": slice(8, 16)} == PARTS
    assert feature_parts("hf_clip", "image", 8) == {"image": slice(0, 8)}
    assert feature_parts("hf_vlm", "image+text", 32) == {"fused": slice(0, 32)}
    assert columns_for("image", feature_parts("hf_vlm", "image+text", 32), 32) == (slice(0, 32), "fused")
    assert columns_for("all", PARTS, 16) == (slice(0, 16), "all")


def test_flags_a_leaking_text_part_and_says_what_to_change() -> None:
    robot, pool = vectors(text_leaks=True)
    reads_all = shortcut_diagnostic(robot, pool, PARTS, EstimatorConfig(), scorer_reads="all")
    assert reads_all["shortcut"] is True
    assert reads_all["probe_text_val_accuracy"] >= 0.95 and reads_all["probe_image_val_accuracy"] < 0.75
    assert reads_all["shortcut_note"].startswith("WARNING") and "scorer.features='image'" in reads_all["shortcut_note"]
    reads_image = shortcut_diagnostic(robot, pool, PARTS, EstimatorConfig(), scorer_reads="image")
    assert reads_image["shortcut"] is True and not reads_image["shortcut_note"].startswith("WARNING")


def test_quiet_when_text_does_not_leak() -> None:
    robot, pool = vectors(text_leaks=False)
    m = shortcut_diagnostic(robot, pool, PARTS, EstimatorConfig(), scorer_reads="all")
    assert m["shortcut"] is False and m["probe_text_val_accuracy"] < 0.7


def test_unavailable_without_two_parts() -> None:
    robot, pool = vectors(text_leaks=True)
    m = shortcut_diagnostic(robot, pool, {"fused": slice(0, 16)}, EstimatorConfig(), scorer_reads="fused")
    assert m == {"shortcut": False, "shortcut_note": m["shortcut_note"]} and "unavailable" in m["shortcut_note"]


def test_fit_scorer_reads_the_image_part_by_default() -> None:
    robot, pool = vectors(text_leaks=True)
    for method in ("estimator", "knn"):
        scorer, m = fit_scorer(ScorerConfig(method=method), robot, pool, backbone_fingerprint="fp", parts=PARTS)
        assert m["features"] == "image" and m["shortcut"] is True and "probe_text_val_auc" in m
        moved = pool.copy()
        moved[:, 8:] += 3.0  # pool texts now worded like the robot's: an image-part scorer does not move
        np.testing.assert_array_equal(scorer.score(moved), scorer.score(pool))
    assert isinstance(scorer, ColumnScorer)
    _, m = fit_scorer(ScorerConfig(features="all"), robot, pool, backbone_fingerprint="fp", parts=PARTS)
    assert m["features"] == "all" and m["shortcut_note"].startswith("WARNING")
