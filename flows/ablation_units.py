"""Running the ablation's (arm, seed) units: one after another in the flow's process, or as Ray tasks on the
cluster, each reserving ``unit_cpus`` CPUs and ``unit_gpus`` GPUs, as many at once as the cluster's nodes have
room for (and at most ``max_parallel_units``). Ray schedules; this module only keeps that many in flight.

The units are seeded and train with a fixed thread count, so either way gives the same numbers. Every unit logs
its MLflow runs itself (to the tracking URI the plan names, made absolute here) as children of the parent run, and
stores its ``result.json``: a unit that fails fails the flow with its arm and seed in the message, and a rerun
resumes at the units that did not finish.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import ray
from prefect import task
from prefect.cache_policies import NONE

from flows.runtime import ray_session
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


def _failed(failures: list[tuple[Unit, BaseException]]) -> UnitFailed:
    lines = [f"arm {arm}, seed {seed}: {type(err).__name__}: {err}" for (arm, seed), err in failures]
    return UnitFailed(f"{len(failures)} ablation unit(s) failed (finished units are kept; a rerun resumes): "
                      + "; ".join(lines))


def run_local(plan: Plan, units: Sequence[Unit], budget: Budget, *, label: str) -> list[UnitResult]:
    """One unit after another in this process (as Prefect tasks); stops at the first failure."""
    results = []
    for arm, seed in units:
        print(f"{label}: arm {arm}, seed {seed}")
        try:
            results.append(run_unit_task(plan, arm, seed, budget))
        except Exception as err:
            raise _failed([((arm, seed), err)]) from err
    return results


def _cause(err: BaseException) -> BaseException:
    """The unit's own exception out of Ray's wrapper (RayTaskError keeps it as ``cause``)."""
    return getattr(err, "cause", None) or err


def run_on_ray(plan: Plan, units: Sequence[Unit], budget: Budget, *, cpus: int, gpus: float,
               max_parallel: int | None, label: str) -> list[UnitResult]:
    """Every unit as a Ray task on the connected cluster, as many in flight as its nodes hold (at most
    ``max_parallel``); after a failure no new unit starts, those in flight finish (their results are stored)
    and the failures are raised together."""
    width = min(room(ray.nodes(), cpus=cpus, gpus=gpus), max_parallel or len(units), len(units))
    if width < 1:
        raise ValueError(f"unit_cpus {cpus} / unit_gpus {gpus}: no node of the Ray cluster has room for one unit "
                         f"(cluster: {ray.cluster_resources()})")
    # no retry: a unit that raised would raise again, and its MLflow runs are already marked failed
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_unit)
    print(f"{label}: {len(units)} units on Ray, {width} at once ({cpus} CPU, {gpus} GPU each)")
    queue, flight, results = list(units), {}, {}
    failures: list[tuple[Unit, BaseException]] = []
    start = time.perf_counter()
    while queue or flight:
        while queue and len(flight) < width and not failures:
            arm, seed = queue.pop(0)
            flight[remote.options(name=f"ablation-{arm}-s{seed}").remote(plan, arm, seed, budget)] = (arm, seed)
        if not flight:
            break
        ready, _ = ray.wait(list(flight), num_returns=1)
        for ref in ready:
            key = flight.pop(ref)
            try:
                results[key] = ray.get(ref)
            except Exception as err:  # the unit's error, named by arm and seed below
                failures.append((key, _cause(err)))
                continue
            print(f"{label}: arm {key[0]}, seed {key[1]} done ({len(results)}/{len(units)}, "
                  f"{time.perf_counter() - start:.0f} s)")
    if failures:
        raise _failed(failures) from failures[0][1]
    return [results[key] for key in units]


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
