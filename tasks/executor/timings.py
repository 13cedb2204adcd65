"""Step timings a run records about itself: every executor job adds its wall time under its step's timing key
(``Job.timing``, else its step), and a step that is no job times itself (``StepTimes.step``). The flow opens one
``recording`` and stores ``StepTimes.record()`` with its summary, so a benchmark reads the product's own timings
instead of wrapping flow internals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class StepTimes:
    """Seconds per step, summed over the jobs of a step (the rank passes of both orders and the pick: ``select``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    @contextmanager
    def step(self, key: str) -> Iterator[None]:
        """Time the block under ``key`` (a step that runs no executor job: fitting, the report)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(key, time.perf_counter() - start)

    def record(self) -> dict[str, float]:
        """``{step}_s`` for every step, in the order they first ran, as the run's summary stores them."""
        return {f"{key}_s": round(seconds, 3) for key, seconds in self.seconds.items()}


_current: ContextVar[StepTimes | None] = ContextVar("step_times", default=None)


@contextmanager
def recording() -> Iterator[StepTimes]:
    """Collect the timings of every job run in this context (a Prefect task called by the flow shares it)."""
    times = StepTimes()
    token = _current.set(times)
    try:
        yield times
    finally:
        _current.reset(token)


def add(key: str, seconds: float) -> None:
    """Add a job's wall time to the timings being recorded, if any."""
    times = _current.get()
    if times is not None:
        times.add(key, seconds)
