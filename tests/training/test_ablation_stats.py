"""The ablation's statistics on constructed curves: a planted effect is reported with an interval that excludes
zero, identical arms are reported as no difference, and the verdict says which in words; by simulation, the
interval holds its level under no effect and the seeds it asks for find a true effect as often as promised."""

from __future__ import annotations

import numpy as np
import pytest

from training.ablation_stats import (
    differences,
    normalised_auc,
    paired_t_interval,
    seeds_needed,
    summarise,
    table,
    verdict,
)

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


def test_t_interval_brackets_the_mean_and_pairs_by_seed():
    mean, low, high = paired_t_interval(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))
    assert (mean, low, high) == (1.0, 1.0, 1.0)  # a constant paired difference: no spread at all
    mean, low, high = paired_t_interval(np.array([1.0, -1.0, 0.5, 0.2]), np.zeros(4))
    assert low < 0 < high and mean == pytest.approx((low + high) / 2)
    # 3 seeds, differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303
    assert paired_t_interval(np.array([1.0, 2.0, 3.0]), np.zeros(3))[1] == pytest.approx(2 - 4.3027 / 3 ** 0.5,
                                                                                       abs=1e-3)


def test_one_seed_gives_no_interval_and_the_verdict_says_so():
    arms = [summarise("none", _arm(1.0, seeds=1)), summarise("curated", _arm(0.2, seeds=1))]
    (d,) = differences(arms)
    assert np.isnan(d.low) and np.isnan(d.high) and not d.excludes_zero
    text = verdict([d])
    assert "did NOT beat" in text and "too few seeds" in text and "beat none" not in text


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize("noise", ["normal", "heavy_tailed"])
def test_under_no_effect_the_interval_excludes_zero_at_its_level(seeds, noise):
    """2,000 simulated ablations of two arms with no true difference (per-seed offsets shared by both arms, as
    the pairing gives): the 95% interval must exclude zero about 5% of the time, never much more."""
    rng = np.random.default_rng(seeds)
    draw = rng.normal if noise == "normal" else (lambda size: rng.standard_t(5, size=size))
    trials = 2000
    excluded = 0
    for _ in range(trials):
        shared = rng.normal(0, 1, size=seeds)
        a, b = shared + 0.1 * draw(size=seeds), shared + 0.1 * draw(size=seeds)
        _, low, high = paired_t_interval(a, b)  # what ``differences`` reports for a pair of arms
        excluded += low > 0 or high < 0
    rate = excluded / trials
    assert 0.025 <= rate <= 0.07, rate  # a percentile bootstrap over 3 seeds gave ~0.25 here


def test_the_seeds_asked_for_find_a_true_effect_four_times_in_five():
    effect, sd = 0.05, 0.06
    n = seeds_needed(effect, sd)
    assert n is not None and 10 <= n <= 16  # (1.96 + 0.84)^2 * (sd / effect)^2 = 11.3, plus the t penalty
    rng = np.random.default_rng(0)
    found = sum(paired_t_interval(rng.normal(effect, sd, n), np.zeros(n))[1] > 0 for _ in range(2000)) / 2000
    assert 0.77 <= found <= 0.86, found
    fewer = sum(paired_t_interval(rng.normal(effect, sd, n - 2), np.zeros(n - 2))[1] > 0 for _ in range(2000))
    assert fewer / 2000 < 0.8
    assert seeds_needed(0.0, sd) is None and seeds_needed(effect, 0.0) is None


def test_seeds_evaluated_at_other_steps_are_refused():
    with pytest.raises(ValueError, match="other steps"):
        summarise("none", {0: [(5, 1.0), (10, 0.9)], 1: [(5, 1.0), (11, 0.9)]})


def test_table_rows_carry_final_area_and_extra_metrics():
    s = summarise("curated", {0: [(0, 2.0), (10, 1.0)], 1: [(0, 2.0), (10, 3.0)]})
    (row,) = table([s], {"l1_arm": {"curated": np.array([0.1, 0.3])}})
    assert row == {"arm": "curated", "seeds": 2, "final_loss": 2.0, "final_loss_sd": 1.0, "auc_loss": 2.0,
                   "auc_loss_sd": 0.5, "final_l1_arm": 0.2}
