"""Decoding and preprocessing ahead of the model, in one of two places. ``RemotePrepare``: as Ray CPU tasks, so the
actors holding the model (a GPU each, on a GPU cluster) only run forward passes: an actor reads its shard, hands each
read batch to a CPU task (``prepare_rows``: decode, resize, crop, tokenise into uint8 pixels / token ids) and keeps
``depth`` of them in flight, so the next batches are being prepared, anywhere on the cluster, while the model runs
on this one. Each task reserves its own CPUs, so decoding scales with the cluster's cores rather than with the
number of model copies. ``LocalPrepare``: on a thread of the actor itself, for CPU-only actors, where decoding is a
few percent of a forward pass and a hand-off to another process costs more than the work (measured: ~2 s of
scheduling, transfer and contention per 32-image task worth ~35 ms on 2 cores).
"""

from __future__ import annotations

import importlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import ray

from estimator.backbones.backbone import Preprocessor
from estimator.backbones.kinds import KINDS
from tasks.embed import PREPARE_COLUMNS, PreparedRows, prepare_rows

# Per worker process: preprocessors by the object ref they came in (a tokenizer's vocabulary can be megabytes,
# fetched once per worker, not once per task). Bounded: one entry per live embedding job, a few at most.
_PREPROCESSORS: dict[str, Preprocessor] = {}
_KEEP = 4


@ray.remote
def _prepare(holder: list[ray.ObjectRef], batch: pa.Table, batch_size: int) -> PreparedRows:
    ref = holder[0]  # wrapped in a list so Ray hands the ref over instead of fetching the object every call
    preprocessor = _PREPROCESSORS.get(ref.hex())
    if preprocessor is None:
        if len(_PREPROCESSORS) >= _KEEP:
            _PREPROCESSORS.clear()
        preprocessor = _PREPROCESSORS[ref.hex()] = ray.get(ref)
    return prepare_rows(preprocessor, batch, batch_size)


def in_order(
    tables: Iterator[pa.Table], submit: Callable[[pa.Table], Any], fetch: Callable[[Any], PreparedRows], *,
    depth: int, seconds: Counter,
) -> Iterator[tuple[pa.Table, PreparedRows]]:
    """``(table, prepared)`` for each of ``tables`` in order, with up to ``depth`` submitted ahead of the one
    handed out. ``seconds`` gains the time spent waiting for the next table (``read``) and for its preparation
    (``prepare``): what the model waited on."""
    pending: deque = deque()
    exhausted = False
    while True:
        while not exhausted and len(pending) < depth:
            start = time.perf_counter()
            table = next(tables, None)
            seconds["read"] += time.perf_counter() - start
            if table is None:
                exhausted = True
            else:
                pending.append((table, submit(table)))
        if not pending:
            return
        table, handle = pending.popleft()
        start = time.perf_counter()
        prepared = fetch(handle)
        seconds["prepare"] += time.perf_counter() - start
        yield table, prepared


@ray.remote
def _start(kind: str) -> None:
    importlib.import_module(KINDS[kind].module)


def start_workers(kind: str, *, cpus: float, n: int) -> list[ray.ObjectRef]:
    """Start ``n`` worker processes for the preparing tasks and import the model library there: seconds each
    (torch, open_clip or transformers), better spent while the actor loads its model than while it waits for
    its first batch. Nothing waits on them."""
    return [_start.options(num_cpus=cpus).remote(kind) for _ in range(n)]


class RemotePrepare:
    """Submits ``prepare_rows`` of a batch as a CPU task of ``cpus`` CPUs (from inside an actor or the driver)."""

    def __init__(self, preprocessor: Preprocessor, *, cpus: float, batch_size: int) -> None:
        self.holder = [ray.put(preprocessor)]
        self.task = _prepare.options(num_cpus=cpus)
        self.batch_size = batch_size

    def submit(self, table: pa.Table) -> ray.ObjectRef:
        return self.task.remote(self.holder, table.select(list(PREPARE_COLUMNS)), self.batch_size)

    @staticmethod
    def fetch(ref: ray.ObjectRef) -> PreparedRows:
        return ray.get(ref)


class LocalPrepare:
    """Runs ``prepare_rows`` of a batch on one thread of this process (the actor): Pillow's decoder and resize
    release the GIL, so it overlaps the forward pass on the actor's own CPUs. One thread, because a preprocessor may
    not be safe to call from two at once (a Hugging Face fast tokenizer raises "Already borrowed"), and because on
    CPUs a batch's decoding is a few percent of its forward pass."""

    def __init__(self, preprocessor: Preprocessor, *, batch_size: int) -> None:
        self.preprocessor = preprocessor
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self.batch_size = batch_size

    def submit(self, table: pa.Table) -> Future:
        return self.thread.submit(prepare_rows, self.preprocessor, table, self.batch_size)

    @staticmethod
    def fetch(future: Future) -> PreparedRows:
        return future.result()
