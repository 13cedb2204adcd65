"""Progress of one step of a run: a bar on an interactive terminal (tqdm), and for logs a rate-limited line such as
``embed: 12/40 shards, 950 samples/s, ETA 0:31``.

Lines go to a callback, by default ``print``: in a Prefect flow run with ``log_prints=True`` they land in the
run's logs, elsewhere on stdout; so this module knows nothing of Prefect. Whatever else shows progress (the
Prefect run page's bar) follows the same feed: ``following(listener)`` hears every step that starts, moves or ends
in its context.

with Progress("score", total=len(shards), unit="shards") as progress:
    for shard in shards:
        ...
        progress.update(samples=rows)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

from tqdm import tqdm

_listeners: ContextVar[tuple[Callable[[Progress], None], ...]] = ContextVar("progress_listeners", default=())


@contextmanager
def following(listener: Callable[[Progress], None]) -> Iterator[None]:
    """Call ``listener(progress)`` whenever a step's ``Progress`` made in this context starts, moves or ends (a
    Prefect task the flow calls shares the context)."""
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


class Progress:
    """Counts units of a step (shards, steps) and the samples they held; the bar only shows on a terminal, the
    lines every ``every_s`` seconds, plus one when the step starts and one when it ends."""

    def __init__(
        self,
        step: str,
        *,
        total: int,
        unit: str = "shards",
        log: Callable[[str], None] = print,
        every_s: float = 10.0,
    ) -> None:
        self.step, self.total, self.unit, self.log, self.every_s = step, total, unit, log, every_s
        self.done = 0
        self.samples = 0
        self._start = self._logged = time.monotonic()
        # disable=None: no bar when stderr is not a terminal (CI, Prefect workers), where the lines suffice.
        self._bar = tqdm(total=total, desc=step, unit=unit, disable=None, file=sys.stderr, leave=False)
        self._listeners = _listeners.get()
        self.log(self.line())
        self._tell()

    def update(self, n: int = 1, *, samples: int = 0) -> None:
        """``n`` more units done, holding ``samples`` samples."""
        self.done += n
        self.samples += samples
        self._bar.update(n)
        if self.samples:
            self._bar.set_postfix_str(f"{self._rate():.0f} samples/s", refresh=False)
        now = time.monotonic()
        if now - self._logged >= self.every_s:
            self._logged = now
            self.log(self.line())
        self._tell()

    def line(self) -> str:
        """``step: done/total unit[, N samples/s][, ETA h:mm:ss | in h:mm:ss]``."""
        elapsed = time.monotonic() - self._start
        parts = [f"{self.done}/{self.total} {self.unit}"]
        if self.samples:
            parts.append(f"{self._rate():.0f} samples/s")
        if self.done >= self.total:
            parts.append(f"in {timedelta(seconds=round(elapsed))}")
        elif self.done:
            parts.append(f"ETA {timedelta(seconds=round(elapsed * (self.total - self.done) / self.done))}")
        return f"{self.step}: " + ", ".join(parts)

    def _rate(self) -> float:
        return self.samples / max(time.monotonic() - self._start, 1e-9)

    def _tell(self) -> None:
        for listener in self._listeners:
            listener(self)

    def close(self) -> None:
        self._bar.close()
        self.log(self.line())
        self._tell()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed step ends its bar without claiming it finished
            self._bar.close()
