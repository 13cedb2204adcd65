"""Units on threads in this process: for work that waits on storage or runs outside the GIL (reads, decoding,
writes), where a Ray task's start-up and transfer would cost more than the unit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tasks.executor.policy import RetryPolicy


@dataclass
class _Session:
    pool: ThreadPoolExecutor
    work: Callable[[Any], Any]
    policy: RetryPolicy
    in_flight: int

    def submit(self, unit: Any) -> Future:
        return self.pool.submit(self.policy.call, self.work, unit)

    def wait(self, handles: list[Future]) -> list[Future]:
        return list(wait(handles, return_when=FIRST_COMPLETED).done)

    def result(self, handle: Future) -> tuple[Any, int | None]:
        return handle.result()


@dataclass(frozen=True)
class Threads:
    """``workers`` threads; the work (a stage's ``setup()`` runs once, here) is shared by them, so it must be
    safe to call from several threads, as plain reads and writes are."""

    workers: int = 16
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @contextmanager
    def open(self, work: Callable[[Any], Any], units: int) -> Iterator[_Session]:
        if hasattr(work, "setup"):
            work.setup()
        workers = max(1, min(self.workers, units))
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            yield _Session(pool, work, self.policy, workers)
        finally:  # a consumer that stops early (a failure in map_ordered) drops the units not started
            pool.shutdown(wait=True, cancel_futures=True)
