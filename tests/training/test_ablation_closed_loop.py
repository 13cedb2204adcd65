"""The ablation's closed-loop comparison on constructed unit results: each arm's success rate over its pooled
episodes with a Wilson interval, the failure rate compared by seed, and the verdict saying which arm won."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from training.ablation import UnitResult
from training.ablation_report import analyse, rollout_gifs
from training.closed_loop import rollouts_gif, wilson_interval


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


def test_the_page_shows_each_arms_first_seed_rollouts(tmp_path):
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 120, 240)]
    units = []
    for arm in ("none", "curated"):
        for seed in (1, 0):
            gif = tmp_path / f"{arm}{seed}.gif"
            gif.write_bytes(rollouts_gif([(arm == "curated", frames[: 2 + seed])]))
            units.append(_unit(arm, seed, 3))
            units[-1].rollouts_uri = str(gif)
    gifs = rollout_gifs(units)
    assert gifs == {"none": (tmp_path / "none0.gif").read_bytes(), "curated": (tmp_path / "curated0.gif").read_bytes()}
    assert gifs["none"] != (tmp_path / "none1.gif").read_bytes()
    page = analyse(units, budget={}, title="t", rollouts=gifs).html
    assert page.count("data:image/gif;base64,") == 2 and "<figcaption>curated</figcaption>" in page
    assert base64.b64encode(gifs["curated"]).decode() in page
    assert "data:image/gif" not in analyse(units, budget={}, title="t").html
