"""What a job is and the two ways to drive one; the backends (``threads``, ``on_ray``) only start, wait for and
collect units, so the in-flight bound, the progress feed, summary rows, markers and ``stats.json`` are written once.

- ``run``: every unit, in any order, to the end; one summary row per unit, failures collected and named (a failed
  unit does not stop the others: whatever finishes is kept, and a rerun does only the rest).
- ``map_ordered``: results in the units' order, streamed, the first failure raised at once (reads a caller
  consumes as they come: footers, row groups).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from core.settings import StorageConfig
from core.storage import exists, join, publish_bytes, read_bytes
from tasks.executor import timings
from tasks.executor.policy import RetryPolicy, TransientFault, describe
from tasks.progress import Progress

U = TypeVar("U")
Handle = Any  # what a backend's ``submit`` returns (a future, an ObjectRef)


class Session(Protocol):
    """A started backend: the work is set up on its workers; units go in, results come out."""

    in_flight: int  # units started and not yet collected, at most

    def submit(self, unit: Any) -> Handle: ...

    def wait(self, handles: list[Handle]) -> list[Handle]:
        """Some of ``handles`` that are done (at least one)."""

    def result(self, handle: Handle) -> tuple[Any, int | None]:
        """(the unit's result, attempts it took where the backend knows); raises the unit's own error."""


class Executor(Protocol):
    """Threads, Ray tasks or Ray actors: where units run, how many at once, under which ``RetryPolicy``."""

    policy: RetryPolicy

    def open(self, work: Callable[[Any], Any], units: int) -> AbstractContextManager[Session]: ...


@dataclass(frozen=True)
class Resources:
    """What one worker of a job reserves (Ray's ``num_cpus`` / ``num_gpus``)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Job(Generic[U]):
    """One step's work: ``work(unit)`` for every unit. ``work`` is a function or a stage (an object with
    ``setup()``, run once per worker, and ``__call__(unit)``); a unit's result should be a small dict, its
    summary row. With ``log_uri`` the job keeps a completion marker per unit there (a rerun skips those units
    and keeps their rows) and ``stats.json`` at the end."""

    step: str  # the progress feed's label and the failure messages' subject
    units: Sequence[U]
    work: Callable[[U], Any]
    name: Callable[[U], str] = str  # how a unit is named in rows, markers and failures
    samples: Callable[[Any], int] | None = None  # samples in a result, for the progress feed's rate
    unit_label: str = "shards"
    # After a failure, start no new unit (those in flight finish): for units that are not worth doing once one has
    # failed, such as the arms of an ablation. The units never started are in ``Report.not_started``.
    stop_on_failure: bool = False
    log_uri: str | None = None
    storage: StorageConfig | None = None
    timing: str | None = None  # the step timing its wall time adds to (``tasks.executor.timings``); default: step


@dataclass(frozen=True)
class Failure:
    """A unit that failed under the policy: transient faults that outlasted the retries, or any other error."""

    unit: Any
    name: str
    error: str  # ``Type: message`` of the error (of the last transient fault, for those)
    transient: bool
    attempts: int


class JobFailed(RuntimeError):
    """Units of a job failed (after every other unit finished); ``failures`` names them."""

    def __init__(self, message: str, failures: list[Failure]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class Report:
    """What the driver keeps of a job: the summary rows of the units that finished (``unit``, ``attempts``,
    ``unit_seconds`` added, ``skipped`` for those a marker said were done), the failures, and the step's wall time."""

    step: str
    rows: list[dict] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    not_started: list[Any] = field(default_factory=list)
    seconds: float = 0.0

    def raise_for_failed(self, hint: str, error: type[JobFailed] = JobFailed) -> None:
        """Raise ``error`` naming every failed unit and its error; ``hint`` says what a rerun does."""
        if self.failures:
            lost = "; ".join(f"{f.name} ({f.error})" for f in self.failures)
            raise error(f"{self.step}: {len(self.failures)} unit(s) failed; {hint}: {lost}", self.failures)

    def stats(self) -> dict:
        """``stats.json``: counts, the step's seconds, the sum of every numeric field of the rows."""
        totals: dict[str, float] = {}
        for row in self.rows:
            for key, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return {"step": self.step, "units": len(self.rows) + len(self.failures) + len(self.not_started),
                "done": len(self.rows), "skipped": sum(bool(r.get("skipped")) for r in self.rows),
                "failed": [{"unit": f.name, "error": f.error} for f in self.failures],
                "not_started": len(self.not_started),
                "seconds": round(self.seconds, 3), "totals": totals}


def marker_uri(job: Job, name: str) -> str:
    """Where a unit's completion marker lives: its name made file-safe, plus a hash so two names never meet."""
    safe = re.sub(r"[^\w.-]+", "_", name)[-80:]
    return join(job.log_uri or "", "completions", f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}.json")


def _row(result: Any, name: str, attempts: int | None, seconds: float) -> dict:
    row = dict(result) if isinstance(result, dict) else {"result": result}
    return {**row, "unit": name, "attempts": attempts, "unit_seconds": round(seconds, 4)}


def run(job: Job, executor: Executor) -> Report:
    """Run every unit of ``job`` on ``executor`` (at most its bound in flight) with one progress feed; a ``Report``
    of rows and failures. It raises nothing for failed units: the caller says what a failure means
    (``Report.raise_for_failed``). With ``job.log_uri``, markers and ``stats.json`` are written there; the job's wall
    time goes to the step timings being recorded (``timings.recording``)."""
    start = time.perf_counter()
    report = Report(job.step)
    todo: list[Any] = []
    for unit in job.units:
        marker = marker_uri(job, job.name(unit)) if job.log_uri else None
        if marker and exists(marker, job.storage):
            report.rows.append({**json.loads(read_bytes(marker, job.storage)), "skipped": True})
        else:
            todo.append(unit)
    with Progress(job.step, total=len(job.units), unit=job.unit_label) as progress:
        progress.update(len(report.rows))
        for unit, outcome, attempts, seconds in _completed(executor, job.work, todo, report, job.stop_on_failure):
            name = job.name(unit)
            if isinstance(outcome, Exception):
                transient = isinstance(outcome, TransientFault)  # it carries the fault's own name and message
                error = str(outcome) if transient else describe(outcome)
                tries = executor.policy.retries + 1 if transient else 1
                report.failures.append(Failure(unit, name, error, transient, tries))
                progress.update()
                continue
            row = _row(outcome, name, attempts, seconds)
            report.rows.append(row)
            if job.log_uri:
                publish_bytes(marker_uri(job, name), json.dumps(row, default=str).encode(), job.storage)
            progress.update(samples=job.samples(outcome) if job.samples else 0)
    report.seconds = time.perf_counter() - start
    timings.add(job.timing or job.step, report.seconds)
    if job.log_uri:
        publish_bytes(join(job.log_uri, "stats.json"), json.dumps(report.stats(), indent=1).encode(), job.storage)
    return report


def _completed(executor: Executor, work: Callable[[Any], Any], units: list[Any], report: Report,
               stop_on_failure: bool) -> Iterator[tuple[Any, Any, int | None, float]]:
    """(unit, result or its error, attempts, seconds from submission) as units finish, at most ``in_flight``
    started and not collected; with ``stop_on_failure``, none started once ``report`` holds a failure."""
    if not units:
        return
    with executor.open(work, len(units)) as session:
        queue, flight = deque(units), {}
        while queue or flight:
            if stop_on_failure and report.failures:
                report.not_started.extend(queue)
                queue.clear()
            while queue and len(flight) < session.in_flight:
                unit = queue.popleft()
                flight[session.submit(unit)] = (unit, time.perf_counter())
            if not flight:  # the rest was dropped after a failure
                return
            for handle in session.wait(list(flight)):
                unit, started = flight.pop(handle)
                try:
                    result, attempts = session.result(handle)
                except Exception as err:  # the unit's own error, named by the caller
                    yield unit, err, None, time.perf_counter() - started
                else:
                    yield unit, result, attempts, time.perf_counter() - started


def map_ordered(executor: Executor, work: Callable[[U], Any], units: Sequence[U],
                name: Callable[[U], str] = str) -> Iterator[Any]:
    """``map(work, units)`` on ``executor``, results in order as they come, at most ``in_flight`` units started
    and not yet consumed (so memory holds that many results). The first unit that fails under the policy raises
    its error here, with a note naming the unit; the units not yet started are dropped."""
    if not units:
        return
    with executor.open(work, len(units)) as session:
        flight: deque = deque()
        for unit in units:
            if len(flight) >= session.in_flight:
                yield _take(session, *flight.popleft(), name)
            flight.append((session.submit(unit), unit))
        while flight:
            yield _take(session, *flight.popleft(), name)


def _take(session: Session, handle: Handle, unit: Any, name: Callable[[Any], str]) -> Any:
    session.wait([handle])
    try:
        return session.result(handle)[0]
    except Exception as err:
        err.add_note(f"while working on unit {name(unit)}")
        raise
