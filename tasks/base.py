"""The shape every processing stage shares: a small dataclass with ``setup()`` (load models once per worker)
and ``process(batch) -> batch`` over Arrow tables, declaring its columns and resources and counting what it
does. Stages import neither Ray nor Prefect; ``tasks.executor`` runs them (on Ray: one actor per worker)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs (Ray's ``num_cpus`` / ``num_gpus``)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class Stats:
    """Counters a stage updates and the flow adds up (``rows_in``, ``rows_out``, ``dropped_<reason>``, seconds)."""

    counts: Counter = field(default_factory=Counter)

    def update(self, label: str, value: float = 1) -> None:
        self.counts[label] += value

    def merge(self, other: Stats | dict) -> None:
        self.counts.update(other.counts if isinstance(other, Stats) else other)


@dataclass(kw_only=True)
class Stage:
    """Base of every stage. Subclasses set the class variables and implement ``process``."""

    name: ClassVar[str] = "stage"
    input_columns: ClassVar[tuple[str, ...]] = ()
    output_columns: ClassVar[tuple[str, ...]] = ()
    resources: Resources = field(default_factory=Resources)
    batch_size: int = 64
    stats: Stats = field(default_factory=Stats, repr=False)

    def setup(self) -> None:
        """Load what ``process`` needs (a model): called once per worker, never per batch."""

    def process(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Check the contract, run ``process`` and count rows and time."""
        missing = [c for c in self.input_columns if c not in batch.column_names]
        if missing:
            where = batch["shard_uri"][0].as_py() if "shard_uri" in batch.column_names and batch.num_rows else "?"
            raise ValueError(f"stage {self.name!r}, shard {where}: missing input columns {missing}")
        start = time.perf_counter()
        out = self.process(batch)
        self.stats.update("rows_in", batch.num_rows)
        self.stats.update("rows_out", out.num_rows)
        self.stats.update("seconds", time.perf_counter() - start)
        return out
