"""The ablation's statistics on constructed curves: a planted effect is reported with an interval that excludes
zero, identical arms are reported as no difference, and the verdict says which in words."""

from __future__ import annotations

import numpy as np
import pytest

from training.ablation_stats import differences, normalised_auc, paired_bootstrap, summarise, table, verdict

STEPS = [5, 10, 15, 20]


def _arm(level: float, *, seeds: int = 3, noise: float = 0.02, rng_seed: int = 0) -> dict[int, list]:
    """Decaying held-out loss curves around ``level``, with per-seed noise shared across arms (the pairing) plus
    a small independent part."""
    shared = np.random.default_rng(99)
    own = np.random.default_rng(rng_seed)
    out = {}
    for s in range(seeds):
        offset = shared.normal(0, 0.1)  # the seed's own effect: the same draws in every arm
        out[s] = [(t, level + 1.0 / t + offset + own.normal(0, noise)) for t in STEPS]
    return out


def test_auc_is_the_mean_value_over_the_steps():
    assert normalised_auc(np.array([0.0, 10.0]), np.array([[1.0, 3.0]]))[0] == pytest.approx(2.0)
    assert normalised_auc(np.array([4.0]), np.array([[0.7]]))[0] == pytest.approx(0.7)


def test_a_planted_effect_is_detected_with_an_interval_excluding_zero():
    arms = [summarise("none", _arm(1.0, rng_seed=1)), summarise("random", _arm(0.95, rng_seed=2)),
            summarise("curated", _arm(0.6, rng_seed=3))]
    diffs = {(d.a, d.b): d for d in differences(arms)}
    for other in ("none", "random"):
        d = diffs[("curated", other)]
        assert d.high < 0 and d.excludes_zero, d
    text = verdict(list(diffs.values()))
    assert text.startswith("Curated beat every other arm at this budget.")
    assert "curated beat none" in text and "curated beat random" in text


def test_identical_arms_show_no_difference():
    same = _arm(1.0, rng_seed=5)
    arms = [summarise("none", same), summarise("random", same), summarise("curated", same)]
    for d in differences(arms):
        assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0) and not d.excludes_zero
    text = verdict(differences(arms))
    assert text.startswith("Curated did NOT beat every other arm") and "includes zero" in text


def test_noise_alone_is_not_called_a_difference():
    arms = [summarise("random", _arm(1.0, noise=0.05, rng_seed=7)),
            summarise("curated", _arm(1.0, noise=0.05, rng_seed=8))]
    (d,) = differences(arms)
    assert not d.excludes_zero, d


def test_a_worse_curated_arm_is_said_to_be_worse():
    arms = [summarise("none", _arm(0.5, rng_seed=1)), summarise("curated", _arm(1.0, rng_seed=2))]
    text = verdict(differences(arms))
    assert "did NOT beat" in text and "curated was worse than none" in text


def test_bootstrap_interval_brackets_the_mean_and_pairs_by_seed():
    mean, low, high = paired_bootstrap(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))
    assert (mean, low, high) == (1.0, 1.0, 1.0)  # a constant paired difference: no spread at all
    mean, low, high = paired_bootstrap(np.array([1.0, -1.0, 0.5, 0.2]), np.zeros(4))
    assert low <= mean <= high and low < 0 < high


def test_seeds_evaluated_at_other_steps_are_refused():
    with pytest.raises(ValueError, match="other steps"):
        summarise("none", {0: [(5, 1.0), (10, 0.9)], 1: [(5, 1.0), (11, 0.9)]})


def test_table_rows_carry_final_area_and_extra_metrics():
    s = summarise("curated", {0: [(0, 2.0), (10, 1.0)], 1: [(0, 2.0), (10, 3.0)]})
    (row,) = table([s], {"l1_arm": {"curated": np.array([0.1, 0.3])}})
    assert row == {"arm": "curated", "seeds": 2, "final_loss": 2.0, "final_loss_sd": 1.0, "auc_loss": 2.0,
                   "auc_loss_sd": 0.5, "final_l1_arm": 0.2}
