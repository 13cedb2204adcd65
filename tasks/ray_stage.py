"""Run stages on Ray Data: a stage with a model becomes an actor pool (the model loads once per actor), sized
from the stage's declared resources."""

from __future__ import annotations

import pyarrow as pa
import ray.data

from tasks.base import Stage


class _StageActor:
    """Holds one stage (and so one loaded model) for the life of a Ray actor."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.stage(batch)


def map_stage(ds: ray.data.Dataset, stage: Stage, *, actors: int = 1) -> ray.data.Dataset:
    """``ds.map_batches`` running ``stage`` on a pool of ``actors`` actors."""
    return ds.map_batches(
        _StageActor,
        fn_constructor_kwargs={"stage": stage},
        batch_size=stage.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=stage.resources.cpus,
        num_gpus=stage.resources.gpus,
    )
