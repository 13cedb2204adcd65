"""A streaming, resumable batch source shared by both recipes, whose data order does not depend on how the work is
split.

Raw items (encoded bytes, not decoded images) come from a deterministic ``source(epoch)``. Every consumer (a
DataLoader worker on a rank) reads the same stream and passes it through the same bounded shuffle buffer, seeded
by (seed, epoch) only, so all of them see one global sequence of *slots*. Global micro-batch ``m`` is the slots
``[m * G, (m + 1) * G)`` with ``G = world_size x batch_size``; rank ``r`` takes its ``r``-th ``batch_size`` of
them, and on a rank the DataLoader's ``W`` workers take the micro-batches in turn (worker ``m mod W``), which is
the order the DataLoader polls them in. So which samples form step k's batch, and in what order, is a function of
the seed and the global batch alone: 1 or 2 workers, 1 or 2 ranks give the same batches.

Only the slots a consumer owns are decoded and tokenised (``encode``); what fails is skipped and counted by reason,
and its slot stays empty: a batch may hold fewer than ``batch_size`` samples (the loop normalises by the step's
valid units, so this changes nothing else). A micro-batch whose every slot was skipped carries one stand-in sample
with ``_weight`` 0 (its loss and count are multiplied by 0), so every rank still runs its forward and backward
(a finite stream, a one-consumer evaluation pass, leaves it out instead).
Items the reader already set aside (``Skipped``) take no slot: each is counted once, by rank 0's owner of the
micro-batch its slot-to-be falls in.

Each batch carries the global position after its micro-batch (epoch, slots of that epoch consumed), the same on
every rank. Resuming from it replays the shuffle without decoding up to there, with any number of workers.
Epochs follow one another without end unless ``epochs`` is set.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

Position = tuple[int, int]  # (epoch, slots of that epoch already consumed): where the global stream continues


class SkipSample(Exception):
    """A sample that cannot be used (undecodable image, too long, ...): skipped and counted by ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Skipped:
    """A raw item standing for input the reader already set aside, so that it is counted (once)."""

    reason: str


def shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Reservoir-style shuffle through a buffer of ``size`` items (size 1 keeps the order)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


class BatchStream(IterableDataset):
    """See the module docstring. ``encode`` turns a raw item into a sample (or raises ``SkipSample``);
    ``collate`` turns a list of samples into a dict of tensors; ``start`` is a saved position."""

    def __init__(
        self,
        *,
        source: Callable[[int], Iterable[Any]],
        encode: Callable[[Any], dict],
        collate: Callable[[list[dict]], dict],
        batch_size: int,
        shuffle_buffer: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        start: Position = (0, 0),
    ) -> None:
        self.source, self.encode, self.collate = source, encode, collate
        self.batch_size, self.shuffle_buffer, self.seed = batch_size, shuffle_buffer, seed
        self.rank, self.world_size, self.epochs = rank, world_size, epochs
        self.start = (int(start[0]), int(start[1]))

    def slots(self) -> Iterator[tuple[Position, Any, list[str]]]:
        """The global slot sequence from ``start``: (position after the slot, item, reasons of the reader's
        ``Skipped`` items read while producing it)."""
        epoch, offset = self.start
        while self.epochs is None or epoch < self.epochs:
            rng = random.Random(f"{self.seed}/{epoch}")
            markers: list[str] = []

            def usable(epoch: int = epoch, markers: list[str] = markers) -> Iterator[Any]:
                for item in self.source(epoch):
                    if isinstance(item, Skipped):
                        markers.append(item.reason)
                    else:
                        yield item

            index = -1
            for index, item in enumerate(shuffled(usable(), self.shuffle_buffer, rng)):
                found = markers[:]
                markers.clear()
                if index >= offset:  # before: consumed before the checkpoint (replayed, not decoded)
                    yield (epoch, index + 1), item, found
            if index < 0:
                raise ValueError(f"epoch {epoch} has no sample to train on (set aside by the reader: "
                                 f"{dict(Counter(markers))})")
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        group = self.world_size * self.batch_size
        first, last = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        samples: list[dict] = []
        skipped: Counter = Counter()
        standin: dict | None = None
        position = self.start
        for j, (position, item, markers) in enumerate(self.slots()):
            micro, place = divmod(j, group)
            if micro % workers != worker:
                continue
            if self.rank == 0:
                skipped.update(markers)
            if first <= place < last:
                try:
                    samples.append(self.encode(item))
                except SkipSample as err:
                    skipped[err.reason] += 1
            if place == group - 1:
                if samples:
                    standin = samples[-1]
                    yield self._batch(samples, skipped, position, 1.0)
                elif self.epochs is None:  # every slot of ours skipped: a weightless stand-in keeps this rank in step
                    standin = standin or self._any_sample()
                    yield self._batch([standin], skipped, position, 0.0)
                samples, skipped = [], Counter()
        if samples:  # a finite stream's last, partial micro-batch
            yield self._batch(samples, skipped, position, 1.0)

    def _any_sample(self) -> dict:
        """The first usable sample of epoch 0 (only ever a stand-in with weight 0)."""
        for item in self.source(0):
            if not isinstance(item, Skipped):
                try:
                    return self.encode(item)
                except SkipSample:
                    continue
        raise ValueError("every sample of the data was skipped")

    def _batch(self, samples: list[dict], skipped: Counter, position: Position, weight: float) -> dict:
        batch = self.collate(samples)
        batch["_position"], batch["_skipped"], batch["_weight"] = position, dict(skipped), weight
        return batch


def loader_workers(requested: int | None, *, cuda: bool | None = None, cpus: int | None = None) -> int:
    """The DataLoader workers of a rank: ``requested`` when set; else on CUDA one per CPU beyond the step's own (the
    CPUs this rank's torch computes on, ``cpus``), 1 to 4, since the host is idle while the GPU steps; on CPU none,
    since a worker takes cores from the step itself."""
    if requested is not None:
        return requested
    if not (torch.cuda.is_available() if cuda is None else cuda):
        return 0
    return min(4, max(1, (cpus or torch.get_num_threads()) - 1))


def loader(stream: BatchStream, num_workers: int) -> DataLoader:
    """A DataLoader over already-batched items (batching happens in the stream, after skipping).

    Workers are spawned, not forked: a training process holds threads (Ray's, S3 clients', CUDA's) and a
    forked child can inherit one of their locks held, and hang. They start once per run (the stream is endless).
    The DataLoader polls its workers in turn from worker 0 and returns their batches in that order, which is how
    the stream deals micro-batches to them.
    """
    return DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=False,
                      prefetch_factor=4 if num_workers else None,
                      multiprocessing_context="spawn" if num_workers else None)


def close(batches: Iterator[dict]) -> None:
    """Stop a DataLoader iterator's workers now. A failed run's traceback keeps the iterator alive (its frames
    hold it), and its workers went on reading and prefetching until the interpreter's exit waited them out."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's own clean-up, also run by its __del__
    if shutdown is None:
        return
    try:
        shutdown()
    except RuntimeError as err:
        # a worker can abort as it is being stopped (torch's exit race: "terminate called without an active
        # exception"); its batches were all consumed or dropped by then, and torch's __del__ ignores this too
        if "DataLoader worker" not in str(err):
            raise
        warnings.warn(f"a DataLoader worker did not exit cleanly while being stopped: {err}", RuntimeWarning,
                      stacklevel=2)


def pad_sequences(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest one."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)
