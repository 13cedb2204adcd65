"""The one failure policy: a transient fault (``core.errors.is_transient``: connection reset, timeout, 5xx,
throttling) is retried after a back-off, up to ``retries`` times; any other error fails its unit at once, because
running the same unit on the same content would fail the same way. A unit that fails writes nothing (each unit
publishes its outputs atomically), so a rerun does it again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import is_transient


class TransientFault(Exception):
    """A transient fault, carried by name and message: Ray retries exactly this type (``retry_exceptions``), and
    the original exception's own class need not unpickle on the driver."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a unit is tried again after a transient fault."""

    retries: int = 2
    backoff_s: float = 1.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): doubling, so a throttled store gets room."""
        return self.backoff_s * 2 ** (attempt - 1)

    def call(self, work: Callable[[Any], Any], unit: Any) -> tuple[Any, int]:
        """``work(unit)`` under the policy in this process; (its result, the attempts it took). Raises the last
        transient fault as ``TransientFault`` (from it) once retries are spent, any other error as it came."""
        for attempt in range(1, self.retries + 2):
            try:
                return work(unit), attempt
            except Exception as err:
                if not is_transient(err):
                    raise
                if attempt > self.retries:
                    raise TransientFault(describe(err)) from err
                time.sleep(self.delay(attempt))
        raise AssertionError("unreachable")

    def once(self, work: Callable[[Any], Any], unit: Any) -> Any:
        """One attempt of ``work(unit)`` for a runner that retries by itself (Ray's ``retry_exceptions``): a transient
        fault waits out the first back-off here (Ray resubmits at once) and is raised as ``TransientFault``."""
        try:
            return work(unit)
        except Exception as err:
            if not is_transient(err):
                raise
            time.sleep(self.delay(1))
            raise TransientFault(describe(err)) from err


def describe(err: BaseException) -> str:
    """``Type: message``, how a failure is named in summary rows and errors."""
    return f"{type(err).__name__}: {err}"
