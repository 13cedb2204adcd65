"""The ablation's statistics as pure functions over held-out curves: per arm the mean and spread across seeds at
every evaluation step, the final value and the area under the curve; per pair of arms the paired-seed difference
with a t-interval; the seeds a difference of that size needs; and a verdict in words.

Runs are paired by seed: arms A and B at seed s share the head's initialisation and the data order, so the
per-seed difference removes that part of the noise. The interval is Student's t over the per-seed differences: it
holds its level with as few as two seeds (a percentile bootstrap over three seeds is their range, and excluded
zero ~25% of the time under no effect; ``tests/training/test_ablation_stats.py`` checks the level by simulation).
With one seed there is no interval and the verdict says so.

The area is divided by the span of steps it covers: the mean held-out loss over fine-tuning, in the loss's units,
which rewards an arm that is ahead early as well as at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats

Curve = Sequence[Sequence[float]]  # [(step, value), ...] of one run


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds: the curve's steps, mean and standard deviation, and per seed the final value
    and the normalised area under the curve."""

    arm: str
    seeds: list[int]
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    final: np.ndarray
    auc: np.ndarray


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` on one statistic, averaged over the paired seeds, with its t-interval (NaN bounds with
    fewer than two seeds), the standard deviation of the per-seed differences and the seeds that a true
    difference of this mean would need for 80% power."""

    a: str
    b: str
    statistic: str
    mean: float
    low: float
    high: float
    level: float
    seeds: int
    sd: float = float("nan")
    seeds_needed: int | None = None

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0  # False for NaN bounds


def normalised_auc(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row of ``values`` over ``steps``, divided by the steps' span (one point: itself)."""
    if len(steps) == 1:
        return values[..., 0].astype(float)
    return np.trapezoid(values, steps, axis=-1) / float(steps[-1] - steps[0])


def summarise(arm: str, runs: Mapping[int, Curve]) -> ArmSummary:
    """Stack one arm's per-seed curves (every seed must be evaluated at the same steps: same budget)."""
    if not runs:
        raise ValueError(f"arm {arm!r} has no run")
    seeds = sorted(runs)
    steps = np.array([s for s, _ in runs[seeds[0]]], dtype=float)
    for seed in seeds:
        if not np.array_equal([s for s, _ in runs[seed]], steps):
            raise ValueError(f"arm {arm!r}: seed {seed} was evaluated at other steps than seed {seeds[0]}")
    values = np.array([[v for _, v in runs[seed]] for seed in seeds], dtype=float)
    return ArmSummary(arm=arm, seeds=seeds, steps=steps, mean=values.mean(0), std=values.std(0, ddof=0),
                      final=values[:, -1], auc=normalised_auc(steps, values))


def paired_t_interval(a: np.ndarray, b: np.ndarray, *, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired by position) and its Student-t interval at ``level`` (NaN with one pair)."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError("paired_t_interval needs two equal-length, non-empty vectors")
    mean = float(diff.mean())
    if len(diff) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf((1 + level) / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return mean, mean - float(half), mean + float(half)


def seeds_needed(effect: float, sd: float, *, level: float = 0.95, power: float = 0.8, most: int = 1000) -> int | None:
    """The fewest paired seeds for which a two-sided paired t-test at ``level`` detects a true mean difference
    ``effect`` with probability ``power``, per-seed differences having standard deviation ``sd`` (noncentral t);
    None when ``most`` seeds would not do or the inputs say nothing (no effect, no spread)."""
    if not (np.isfinite(effect) and np.isfinite(sd)) or effect == 0 or sd <= 0:
        return None

    def enough(n: int) -> bool:
        crit = stats.t.ppf((1 + level) / 2, n - 1)
        shift = abs(effect) / sd * np.sqrt(n)
        wrong_side = np.nan_to_num(stats.nct.cdf(-crit, n - 1, shift))  # negligible; scipy gives NaN far out
        return stats.nct.sf(crit, n - 1, shift) + wrong_side >= power

    if not enough(most):
        return None
    low, high = 1, most  # power grows with n: bisect for the first n that is enough
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def _paired(x: ArmSummary, y: ArmSummary, statistic: str) -> tuple[np.ndarray, np.ndarray]:
    common = sorted(set(x.seeds) & set(y.seeds))
    if not common:
        raise ValueError(f"arms {x.arm!r} and {y.arm!r} share no seed")
    vx, vy = getattr(x, statistic), getattr(y, statistic)
    return (np.array([vx[x.seeds.index(s)] for s in common]), np.array([vy[y.seeds.index(s)] for s in common]))


def differences(summaries: Sequence[ArmSummary], *, statistic: str = "auc", level: float = 0.95
                ) -> list[Difference]:
    """Every pair of arms (later arm minus earlier arm, in the order given) on ``statistic`` (auc or final)."""
    out = []
    for x, y in combinations(summaries, 2):
        a, b = _paired(y, x, statistic)
        mean, low, high = paired_t_interval(a, b, level=level)
        sd = float(np.std(a - b, ddof=1)) if len(a) > 1 else float("nan")
        out.append(Difference(a=y.arm, b=x.arm, statistic=statistic, mean=mean, low=low, high=high, level=level,
                              seeds=len(a), sd=sd, seeds_needed=seeds_needed(mean, sd, level=level)))
    return out


def verdict(diffs: Sequence[Difference], *, arm: str = "curated", metric: str = "held-out loss") -> str:
    """Plain words on whether ``arm`` beat each other arm (lower is better), interval included, whatever the
    answer; the statistic is the first difference's."""
    lines, wins = [], []
    for d in diffs:
        if arm not in (d.a, d.b):
            continue
        other = d.b if d.a == arm else d.a
        sign = 1.0 if d.a == arm else -1.0  # express as arm minus other
        mean, low, high = sign * d.mean, min(sign * d.low, sign * d.high), max(sign * d.low, sign * d.high)
        interval = f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] ({d.level:.0%} t-interval, {d.seeds} paired seeds)"
        if d.seeds < 2:
            wins.append(False)
            lines.append(f"too few seeds to compare {arm} with {other}: {d.seeds} paired seed gives no interval "
                         f"({metric} {d.statistic} {arm} − {other} = {mean:+.4f}); run at least 2, better 3 or more.")
        elif high < 0:
            wins.append(True)
            lines.append(f"{arm} beat {other}: {metric} {d.statistic} {arm} − {other} = {interval}.")
        elif low > 0:
            wins.append(False)
            lines.append(f"{arm} was worse than {other}: {metric} {d.statistic} {arm} − {other} = {interval}.")
        else:
            wins.append(False)
            need = (f"; a true difference this size would need about {d.seeds_needed} seeds to be found 4 times in 5"
                    if d.seeds_needed else "")
            lines.append(f"no clear difference between {arm} and {other}: {metric} {d.statistic} "
                         f"{arm} − {other} = {interval} includes zero{need}.")
    if not lines:
        return f"no arm to compare {arm} with."
    head = (f"{arm.capitalize()} beat every other arm at this budget." if all(wins)
            else f"{arm.capitalize()} did NOT beat every other arm at this budget.")
    return " ".join([head, *lines])


def table(summaries: Sequence[ArmSummary], extra: Mapping[str, Mapping[str, np.ndarray]] | None = None
          ) -> list[dict[str, object]]:
    """One row per arm: seeds, final and area (mean ± sd over seeds), plus final means of ``extra`` metrics
    (``{metric: {arm: per-seed finals}}``, e.g. action L1 and gripper accuracy)."""
    rows = []
    for s in summaries:
        row: dict[str, object] = {
            "arm": s.arm, "seeds": len(s.seeds),
            "final_loss": round(float(s.final.mean()), 4), "final_loss_sd": round(float(s.final.std()), 4),
            "auc_loss": round(float(s.auc.mean()), 4), "auc_loss_sd": round(float(s.auc.std()), 4)}
        for metric, per_arm in (extra or {}).items():
            if s.arm in per_arm:
                row[f"final_{metric}"] = round(float(np.mean(per_arm[s.arm])), 4)
        rows.append(row)
    return rows


def difference_rows(diffs: Sequence[Difference]) -> list[dict[str, object]]:
    return [{"pair": f"{d.a} − {d.b}", "statistic": d.statistic, "mean": round(d.mean, 4),
             "low": round(d.low, 4), "high": round(d.high, 4), "excludes_zero": d.excludes_zero, "seeds": d.seeds,
             "seeds_for_80pct_power": d.seeds_needed} for d in diffs]
