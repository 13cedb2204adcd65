"""Run workers on Ray Data: anything with a model (a stage, a shard embedder) becomes an actor pool whose
``setup()`` runs once per actor, sized from the declared resources. The job reports its own progress, so Ray
Data's display (block counters, banners) is turned off for its datasets."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
import ray.data

from tasks.base import Resources


class Worker(Protocol):
    def setup(self) -> None: ...

    def __call__(self, batch: pa.Table) -> pa.Table: ...


class _Actor:
    """Holds one worker (and so one loaded model) for the life of a Ray actor."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.worker.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.worker(batch)


def map_actors(
    ds: ray.data.Dataset, worker: Worker, *, resources: Resources, batch_size: int, actors: int = 1
) -> ray.data.Dataset:
    """``ds.map_batches`` running ``worker`` on a pool of ``actors`` actors, each reserving ``resources``."""
    return ds.map_batches(
        _Actor,
        fn_constructor_kwargs={"worker": worker},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=resources.cpus,
        num_gpus=resources.gpus,
        # Ray cannot honour actor restarts when constructor arguments live in its object store (ray#53727) and
        # says so in an ERROR line per run; a lost actor fails the job instead, and a rerun skips cached shards.
        max_restarts=0,
    )


def quiet(ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` without Ray Data's progress display (block counters every 10 s off a terminal, bars on one) or
    its execution banner. Set on the dataset's own context, a copy Ray made for it: nothing process-wide changes."""
    ds.context.enable_progress_bars = False
    ds.context.print_on_execution_start = False
    return ds


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # the progress module's one notice is that its bars are off, which ``quiet`` asked for
        return record.levelno >= logging.WARNING and not record.name.startswith("ray.data._internal.progress")


@contextlib.contextmanager
def console_warnings_only() -> Iterator[None]:
    """While the block runs, Ray Data's console shows warnings only; its INFO lines ("execution finished in")
    say nothing a user can act on. Its log file in the Ray session still gets everything. No option of the
    dataset's context covers these lines, so a filter sits on the console handlers for the block alone."""
    handlers = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    only = _WarningsOnly()
    for handler in handlers:
        handler.addFilter(only)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(only)
