"""The ablation's statistics as pure functions over held-out curves: per arm the mean and spread across seeds at
every evaluation step, the final value and the area under the curve; per pair of arms the paired-seed difference
with a bootstrap interval; and a verdict in words.

Runs are paired by seed: arms A and B at seed s share the head's initialisation and the data order, so the
per-seed difference removes that part of the noise. The interval resamples seeds (with replacement) and takes the
percentiles of the mean difference. With few seeds it is coarse: with 3 seeds a 95% interval is about the range of
the three per-seed differences, so it excludes zero only when every seed agrees on the sign.

The area is divided by the span of steps it covers: the mean held-out loss over fine-tuning, in the loss's units,
which rewards an arm that is ahead early as well as at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

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
    """``a`` minus ``b`` on one statistic, averaged over the paired seeds, with its bootstrap interval."""

    a: str
    b: str
    statistic: str
    mean: float
    low: float
    high: float
    level: float
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


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


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired by position) and the percentile interval of that mean over ``n_boot``
    resamples of the pairs."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError("paired_bootstrap needs two equal-length, non-empty vectors")
    picks = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[picks].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)


def _paired(x: ArmSummary, y: ArmSummary, statistic: str) -> tuple[np.ndarray, np.ndarray]:
    common = sorted(set(x.seeds) & set(y.seeds))
    if not common:
        raise ValueError(f"arms {x.arm!r} and {y.arm!r} share no seed")
    vx, vy = getattr(x, statistic), getattr(y, statistic)
    return (np.array([vx[x.seeds.index(s)] for s in common]), np.array([vy[y.seeds.index(s)] for s in common]))


def differences(summaries: Sequence[ArmSummary], *, statistic: str = "auc", level: float = 0.95,
                n_boot: int = 10_000, seed: int = 0) -> list[Difference]:
    """Every pair of arms (later arm minus earlier arm, in the order given) on ``statistic`` (auc or final)."""
    out = []
    for x, y in combinations(summaries, 2):
        a, b = _paired(y, x, statistic)
        mean, low, high = paired_bootstrap(a, b, n_boot=n_boot, level=level, seed=seed)
        out.append(Difference(a=y.arm, b=x.arm, statistic=statistic, mean=mean, low=low, high=high, level=level,
                              seeds=len(a)))
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
        interval = f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] ({d.level:.0%} interval, {d.seeds} paired seeds)"
        if high < 0:
            wins.append(True)
            lines.append(f"{arm} beat {other}: {metric} {d.statistic} {arm} − {other} = {interval}.")
        elif low > 0:
            wins.append(False)
            lines.append(f"{arm} was worse than {other}: {metric} {d.statistic} {arm} − {other} = {interval}.")
        else:
            wins.append(False)
            lines.append(f"no clear difference between {arm} and {other}: {metric} {d.statistic} "
                         f"{arm} − {other} = {interval} includes zero.")
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
             "low": round(d.low, 4), "high": round(d.high, 4), "excludes_zero": d.excludes_zero} for d in diffs]
