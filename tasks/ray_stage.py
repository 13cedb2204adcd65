"""Run workers on Ray Data: anything with a model (a stage, a shard embedder) becomes an actor pool whose
``setup()`` runs once per actor, sized from the declared resources."""

from __future__ import annotations

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
    )
