"""The ablation's closed-loop comparison on constructed unit results: each arm's success rate over its pooled
episodes with a Wilson interval, the failure rate compared by seed, and the verdict saying which arm won."""

from __future__ import annotations

import pytest

from training.ablation import UnitResult
from training.ablation_report import analyse
from training.closed_loop import wilson_interval


def _unit(arm: str, seed: int, successes: int, *, loss: float = 1.0) -> UnitResult:
    curves = {"loss": [(2, loss + 0.1 * seed), (4, loss - 0.1 + 0.1 * seed)]}
    return UnitResult(arm=arm, seed=seed, curves=curves, midtrain_run_id=None, finetune_run_id=f"{arm}{seed}",
                      midtrain_samples=0, seconds=1.0,
                      closed_loop={"successes": successes, "episodes": 20, "rate": successes / 20})


def test_success_rates_get_a_wilson_interval_and_the_failure_rate_a_paired_verdict():
    units = [_unit("none", s, k) for s, k in enumerate((2, 3, 1, 2))]
    units += [_unit("curated", s, k) for s, k in enumerate((12, 14, 11, 13))]
    result = analyse(units, budget={}, title="t")
    curated = next(r for r in result.arms if r["arm"] == "curated")
    low, high = wilson_interval(50, 80)
    assert curated["success_rate"] == pytest.approx(50 / 80, abs=1e-4)
    assert (curated["success_low"], curated["success_high"]) == (round(low, 4), round(high, 4))
    row = next(p for p in result.pairs if p["statistic"] == "failure rate")
    assert row["pair"] == "curated − none" and row["mean"] == pytest.approx(-(50 - 8) / 80) and row["excludes_zero"]
    assert "Closed loop: Curated beat every other arm" in result.verdict
    assert "closed-loop failure rate curated − none" in result.verdict


def test_without_rollouts_in_every_unit_there_is_no_closed_loop_comparison():
    units = [_unit("none", 0, 2), _unit("curated", 0, 5)]
    units[0].closed_loop = None
    result = analyse(units, budget={}, title="t")
    assert "Closed loop" not in result.verdict and not any("success_rate" in r for r in result.arms)
