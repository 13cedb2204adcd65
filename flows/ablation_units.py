"""Running the ablation's (arm, seed) units on ``tasks.executor``: one after another in the flow's process (one
thread), or as Ray tasks on the cluster, each reserving ``unit_cpus`` CPUs and ``unit_gpus`` GPUs, as many at once
as the cluster's nodes have room for (and at most ``max_parallel_units``). The executor keeps that many in flight,
retries a transient fault under its one policy and, after a failure, starts no new unit.

The units are seeded and train with a fixed thread count, so either way gives the same numbers. Every unit logs
its MLflow runs itself (to the tracking URI the plan names, made absolute here) as children of the parent run, and
stores its ``result.json``: a unit that fails fails the flow with its arm and seed in the message, and a rerun
resumes at the units that did not finish.
"""

from __future__ import annotations

import contextvars
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ray
from prefect import task
from prefect.cache_policies import NONE

from flows.runtime import ray_session
from tasks.executor import Executor, Failure, Job, Threads, run
from tasks.executor.on_ray import RayTasks
from training.ablation import Budget, Plan, UnitResult, run_unit

Unit = tuple[str, int]  # (arm, seed)
run_unit_task = task(run_unit, name="ablation-unit", cache_policy=NONE)


class UnitFailed(RuntimeError):
    """One or more (arm, seed) units raised; the message names each with its error."""


def pick_executor(executor: Literal["auto", "local", "ray"], address: str | None) -> Literal["local", "ray"]:
    """auto: Ray where a cluster is configured (``ray_address`` or ``RAY_ADDRESS``), else this process."""
    if executor != "auto":
        return executor
    return "ray" if address or os.environ.get("RAY_ADDRESS") else "local"


def absolute_tracking(uri: str) -> str:
    """A tracking URI a worker elsewhere resolves the same: a relative SQLite path made absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, _, query = uri.removeprefix("sqlite:///").partition("?")
        return f"sqlite:///{Path(path).resolve()}" + (f"?{query}" if query else "")
    return uri


def room(nodes: Sequence[dict], *, cpus: float, gpus: float) -> int:
    """How many units the alive nodes hold at once (a unit runs on one node): ``ray.nodes()`` rows."""
    total = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fits = math.floor(have.get("CPU", 0) / cpus + 1e-9)
        if gpus > 0:
            fits = min(fits, math.floor(have.get("GPU", 0) / gpus + 1e-9))
        total += max(fits, 0)
    return total


def _failed(failures: list[Failure]) -> UnitFailed:
    return UnitFailed(f"{len(failures)} ablation unit(s) failed (finished units are kept; a rerun resumes): "
                      + "; ".join(f"{f.name}: {f.error}" for f in failures))


def _name(unit: Unit) -> str:
    return f"arm {unit[0]}, seed {unit[1]}"


@dataclass(frozen=True)
class _RunUnit:
    """The executor's work: one (arm, seed) unit of ``plan``. ``context``: the flow's context, so that a unit run
    on the executor's thread is a Prefect task of the flow run (a Ray worker runs the plain function)."""

    plan: Plan
    budget: Budget
    context: contextvars.Context | None = None

    def __call__(self, unit: Unit) -> UnitResult:
        if self.context is None:
            return run_unit(self.plan, *unit, self.budget)
        return self.context.copy().run(run_unit_task, self.plan, *unit, self.budget)


def _run(units: Sequence[Unit], work: _RunUnit, executor: Executor, label: str) -> list[UnitResult]:
    """The units' results in ``units`` order. After a failure no new unit starts, those in flight finish (their
    results are stored) and the failures are raised together. Only a transient fault is retried (the executor's
    one policy): any other error would come again, and the unit's MLflow runs are already marked failed."""
    report = run(Job(step=label, units=units, work=work, name=_name, unit_label="units", stop_on_failure=True),
                 executor)
    if report.failures:
        raise _failed(report.failures)
    results = {row["unit"]: row["result"] for row in report.rows}
    return [results[_name(unit)] for unit in units]


def run_local(plan: Plan, units: Sequence[Unit], budget: Budget, *, label: str) -> list[UnitResult]:
    """One unit after another in this process (as Prefect tasks of the flow run); stops at the first failure."""
    return _run(units, _RunUnit(plan, budget, contextvars.copy_context()), Threads(workers=1), label)


def run_on_ray(plan: Plan, units: Sequence[Unit], budget: Budget, *, cpus: int, gpus: float,
               max_parallel: int | None, label: str) -> list[UnitResult]:
    """Every unit as a Ray task on the connected cluster, as many in flight as its nodes hold (at most
    ``max_parallel``)."""
    width = min(room(ray.nodes(), cpus=cpus, gpus=gpus), max_parallel or len(units), len(units))
    if width < 1:
        raise ValueError(f"unit_cpus {cpus} / unit_gpus {gpus}: no node of the Ray cluster has room for one unit "
                         f"(cluster: {ray.cluster_resources()})")
    print(f"{label}: {len(units)} units on Ray, {width} at once ({cpus} CPU, {gpus} GPU each)")
    return _run(units, _RunUnit(plan, budget), RayTasks(cpus=cpus, gpus=gpus, in_flight=width), label)


def run_units(plan: Plan, units: Sequence[Unit], budget: Budget, *,
              executor: Literal["auto", "local", "ray"], address: str | None, cpus: int, gpus: float,
              max_parallel: int | None, label: str) -> list[UnitResult]:
    """The units' results in ``units`` order, run where ``executor`` says; auto falls back to this process when
    the configured cluster has no room for a unit."""
    if pick_executor(executor, address) == "local":
        return run_local(plan, units, budget, label=label)
    with ray_session(address):
        if executor == "auto" and room(ray.nodes(), cpus=cpus, gpus=gpus) < 1:
            print(f"{label}: the Ray cluster has no room for a unit ({cpus} CPU, {gpus} GPU): running here")
        else:
            return run_on_ray(plan, units, budget, cpus=cpus, gpus=gpus, max_parallel=max_parallel, label=label)
    return run_local(plan, units, budget, label=label)
