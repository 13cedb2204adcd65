"""The one executor: every backend retries transient faults under one policy, fails any other error once and
names the unit, keeps its in-flight bound, and writes summary rows, completion markers and ``stats.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from ray import cloudpickle

from tasks.executor import Job, JobFailed, RetryPolicy, Threads, TransientFault, map_ordered, recording, run

FAST = RetryPolicy(retries=2, backoff_s=0.01)


@pytest.fixture
def on_ray(ray_local):
    """The local Ray instance, with this module's work classes sent by value (Ray workers cannot import tests)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class Flaky:
    """Unit ``name`` fails ``transient`` times with a connection reset (then works), or always with a content error
    when ``permanent``. Attempts are counted in files, so they add up across threads, Ray workers and actors."""

    root: str
    transient: int = 0
    permanent: str = ""

    def __call__(self, name: str) -> dict:
        log = Path(self.root) / f"{name}.attempts"
        with log.open("a") as f:
            f.write(f"{time.time()} start\n")
        attempts = log.read_text().count("start")
        time.sleep(0.05)  # long enough for units to overlap where the bound allows it
        with log.open("a") as f:
            f.write(f"{time.time()} end\n")
        if name == self.permanent:
            raise ValueError(f"{name} holds bad content")
        if attempts <= self.transient:
            raise ConnectionResetError(104, "Connection reset by peer")
        return {"samples": 10, "name": name}


def attempts(root: Path, name: str) -> int:
    return (root / f"{name}.attempts").read_text().count("start")


def most_at_once(root: Path) -> int:
    """The most units running at the same moment, from every attempt's start and end times."""
    events = []
    for log in root.glob("*.attempts"):
        for line in log.read_text().splitlines():
            at, what = line.split()
            events.append((float(at), 1 if what == "start" else -1))
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def check_policy(executor, tmp_path: Path) -> None:
    """One transient fault is retried; a fault that outlasts the retries and a content error fail their units, named,
    after the other units finish; the content error is tried once."""
    units = ["a", "b", "c", "d"]
    work = Flaky(str(tmp_path), transient=1, permanent="c")
    report = run(Job(step="test", units=units, work=work), executor)
    assert sorted(r["unit"] for r in report.rows) == ["a", "b", "d"]
    assert [attempts(tmp_path, u) for u in units] == [2, 2, 1, 2]
    (failure,) = report.failures
    assert (failure.name, failure.transient, failure.attempts) == ("c", False, 1)
    assert failure.error == "ValueError: c holds bad content"
    with pytest.raises(JobFailed, match=r"test: 1 unit\(s\) failed; a rerun does them: c \(ValueError: c holds"):
        report.raise_for_failed("a rerun does them")

    stubborn = tmp_path / "stubborn"
    stubborn.mkdir()
    report = run(Job(step="test", units=["e"], work=Flaky(str(stubborn), transient=9)), executor)
    (failure,) = report.failures
    assert failure.transient and failure.error.startswith("ConnectionResetError: ")
    assert failure.attempts == FAST.retries + 1
    assert attempts(stubborn, "e") == FAST.retries + 1


def test_threads_retry_transient_faults_and_fail_others_once(tmp_path):
    check_policy(Threads(workers=2, policy=FAST), tmp_path)


def test_threads_keep_their_in_flight_bound_and_count_attempts(tmp_path):
    report = run(Job(step="test", units=[f"u{i}" for i in range(8)], work=Flaky(str(tmp_path), transient=1)),
                 Threads(workers=3, policy=FAST))
    assert most_at_once(tmp_path) <= 3 and len(report.rows) == 8
    assert {r["attempts"] for r in report.rows} == {2}


def test_a_stage_is_set_up_once_and_ordered_results_stream_within_the_bound():
    @dataclass
    class Double:
        setups: int = 0
        started: int = 0

        def setup(self) -> None:
            self.setups += 1

        def __call__(self, x: int) -> int:
            self.started += 1
            return 2 * x

    stage, seen = Double(), []
    for i, y in enumerate(map_ordered(Threads(workers=2), stage, list(range(10)))):
        seen.append(y)
        assert stage.started <= i + 1 + 2  # consumed, plus at most two started ahead
    assert seen == [2 * x for x in range(10)] and stage.setups == 1


def test_ordered_map_raises_the_first_failure_naming_its_unit(tmp_path):
    def read(x: int) -> int:
        if x == 3:
            raise FileNotFoundError(f"entry {x}")
        return x

    with pytest.raises(FileNotFoundError, match="entry 3") as err:
        list(map_ordered(Threads(workers=2), read, list(range(6)), name=lambda x: f"entry-{x}"))
    assert err.value.__notes__ == ["while working on unit entry-3"]  # the caller's own error type, with the unit


def test_markers_and_stats_are_written_and_a_rerun_skips_finished_units(tmp_path):
    logs = tmp_path / "logs"
    job = Job(step="test", units=["a", "b", "c"], work=Flaky(str(tmp_path), permanent="b"), log_uri=str(logs),
              samples=lambda row: row["samples"])
    run(job, Threads(workers=2, policy=FAST))
    assert len(list((logs / "completions").iterdir())) == 2  # a and c; b failed and has none
    stats = json.loads((logs / "stats.json").read_text())
    assert (stats["units"], stats["done"], stats["totals"]["samples"]) == (3, 2, 20)
    assert stats["failed"] == [{"unit": "b", "error": "ValueError: b holds bad content"}]

    again = run(replace(job, work=Flaky(str(tmp_path))), Threads(workers=2, policy=FAST))
    assert [attempts(tmp_path, u) for u in "abc"] == [1, 2, 1]  # only b ran again
    assert sorted((r["unit"], bool(r.get("skipped"))) for r in again.rows) == [("a", True), ("b", False), ("c", True)]
    assert json.loads((logs / "stats.json").read_text())["skipped"] == 2


@pytest.mark.usefixtures("on_ray")
def test_ray_tasks_retry_under_the_same_policy(tmp_path):
    from tasks.executor.on_ray import RayTasks

    check_policy(RayTasks(cpus=0.5, policy=FAST), tmp_path)


@pytest.mark.usefixtures("on_ray")
def test_ray_tasks_keep_their_in_flight_bound(tmp_path):
    from tasks.executor.on_ray import RayTasks

    report = run(Job(step="test", units=["a", "b", "c"], work=Flaky(str(tmp_path))), RayTasks(cpus=0.5, in_flight=1))
    assert len(report.rows) == 3 and most_at_once(tmp_path) == 1


@dataclass
class Stage:
    """A stage whose ``setup`` is recorded (per process: an actor's pid), running ``Flaky``."""

    work: Flaky

    def setup(self) -> None:
        with (Path(self.work.root) / "setups.log").open("a") as f:
            f.write(f"{threading.get_native_id()}\n")
        self.ready = True

    def __call__(self, name: str) -> dict:
        assert self.ready
        return self.work(name)


@pytest.mark.usefixtures("on_ray")
def test_ray_actors_set_up_once_retry_under_the_same_policy_and_keep_their_bound(tmp_path):
    from tasks.executor.on_ray import RayActors, RayTasks

    check_policy(RayActors(actors=2, cpus=0.25, policy=FAST), tmp_path)  # setups: one per actor per job
    bound = tmp_path / "bound"
    bound.mkdir()
    report = run(Job(step="test", units=[f"u{i}" for i in range(5)], work=Stage(Flaky(str(bound), transient=1))),
                 RayActors(actors=2, cpus=0.25, policy=FAST))
    assert len(report.rows) == 5 and most_at_once(bound) <= 2
    assert len((bound / "setups.log").read_text().split()) == 2  # once per actor, not per unit or per retry
    with pytest.raises(TypeError, match="RayActors"):
        run(Job(step="test", units=["a"], work=Stage(Flaky(str(bound)))), RayTasks())



@pytest.mark.usefixtures("on_ray")
def test_an_actor_holding_two_calls_runs_its_units_two_at_a_time(tmp_path):
    """``calls=2``: one actor, set up once, runs two units at once (threads), so a stage can read its next unit
    while the current one computes; never more than ``actors x calls``."""
    from tasks.executor.on_ray import RayActors

    report = run(Job(step="test", units=[f"u{i}" for i in range(6)], work=Stage(Flaky(str(tmp_path)))),
                 RayActors(actors=1, cpus=0.25, policy=FAST, calls=2))
    assert len(report.rows) == 6 and most_at_once(tmp_path) == 2
    assert len((tmp_path / "setups.log").read_text().split()) == 1

def test_transient_fault_carries_the_original_error_by_name(tmp_path):
    with pytest.raises(TransientFault, match="ConnectionResetError: .*Connection reset by peer"):
        RetryPolicy(retries=0).call(Flaky(str(tmp_path), transient=1), "x")


def test_a_job_that_stops_on_failure_starts_no_new_unit_after_one(tmp_path):
    units = ["a", "b", "c", "d"]
    report = run(Job(step="test", units=units, work=Flaky(str(tmp_path), permanent="a"), stop_on_failure=True),
                 Threads(workers=1, policy=FAST))
    assert [f.name for f in report.failures] == ["a"] and report.not_started == ["b", "c", "d"]
    assert not (tmp_path / "b.attempts").exists() and report.stats()["not_started"] == 3


LOSE_THE_RAYLET = """
import psutil, ray, sys, time
from core.errors import ClusterLost
from tasks.executor import Job, run
from tasks.executor.on_ray import RayActors

class Slow:
    def setup(self):
        pass

    def __call__(self, unit):
        time.sleep(60)

ray.init(num_cpus=2, include_dashboard=False)
raylet = ray._private.worker.global_worker.node.all_processes["raylet"][0].process.pid
psutil.Process(raylet).kill()
try:
    run(Job(step="lost", units=["a", "b"], work=Slow(), name=str), RayActors(actors=2))
except ClusterLost as err:
    print("ClusterLost:", err)
    sys.exit(0)
"""


@pytest.mark.slow
def test_a_lost_local_raylet_is_one_clear_error(tmp_path):
    """The driver's own raylet killed: the executor raises ``ClusterLost`` (what the command prints in one line),
    not Ray's actor error. In a subprocess: the test's own Ray instance must survive."""
    done = subprocess.run([sys.executable, "-c", LOSE_THE_RAYLET], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ClusterLost: the Ray cluster was lost during the run (its raylet exited)" in done.stdout, done.stdout


def test_each_jobs_wall_time_is_recorded_under_its_step_timing(tmp_path):
    with recording() as times:
        run(Job(step="rank (score)", units=["a"], work=Flaky(str(tmp_path)), timing="select"), Threads())
        run(Job(step="pick", units=["b"], work=Flaky(str(tmp_path)), timing="select"), Threads())
        run(Job(step="manifest", units=["c"], work=Flaky(str(tmp_path))), Threads())
        with times.step("report"):
            time.sleep(0.01)
    record = times.record()
    assert list(record) == ["select_s", "manifest_s", "report_s"]
    assert record["select_s"] >= 0.1 and record["manifest_s"] >= 0.05 and record["report_s"] >= 0.01
    run(Job(step="outside", units=["d"], work=Flaky(str(tmp_path))), Threads())  # no recording: nothing kept
    assert "outside_s" not in times.record()
