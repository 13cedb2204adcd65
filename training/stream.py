"""A streaming, resumable batch source shared by both recipes.

Raw items (encoded bytes, not decoded images) come from a deterministic ``source(epoch)``. Every consumer (a
DataLoader worker on a rank) keeps the items whose position in that stream is its own modulo the consumer
count, so no item is seen twice in an epoch; it shuffles them through a bounded buffer seeded by (seed, epoch,
consumer), decodes and tokenises them (skipping and counting what fails), and yields collated batches. Epochs
follow one another without end unless ``epochs`` is set.

Each batch carries its consumer's position (epoch, items taken from the shuffle buffer). Resuming from saved
positions replays the buffer without decoding up to there, so the batches continue exactly where they stopped.
With several workers the DataLoader polls them round-robin from worker 0: ``role_offset`` (micro-batches
already consumed, modulo the worker count) rotates which logical consumer each worker plays, so the
interleaving continues too. Every consumer reads the whole stream and keeps its share (simple and exact; the
cost is reading, not decoding, n times).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

Position = tuple[int, int]  # (epoch, items taken from the shuffle buffer in that epoch)


class SkipSample(Exception):
    """A sample that cannot be used (undecodable image, too long, ...): skipped and counted by ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Skipped:
    """A raw item standing for input the reader already set aside, so that it is counted by one consumer."""

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
    ``collate`` turns a list of samples into a dict of tensors."""

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
        positions: dict[int, Position] | None = None,
        role_offset: int = 0,
    ) -> None:
        self.source, self.encode, self.collate = source, encode, collate
        self.batch_size, self.shuffle_buffer, self.seed = batch_size, shuffle_buffer, seed
        self.rank, self.world_size, self.epochs = rank, world_size, epochs
        self.positions, self.role_offset = dict(positions or {}), role_offset

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        role = ((info.id if info is not None else 0) + self.role_offset) % workers
        consumer, consumers = self.rank * workers + role, self.world_size * workers
        epoch, done = self.positions.get(consumer, (0, 0))
        pending: list[dict] = []
        skipped: Counter = Counter()
        while self.epochs is None or epoch < self.epochs:
            rng = random.Random(f"{self.seed}/{epoch}/{consumer}")
            mine = (item for i, item in enumerate(self.source(epoch)) if i % consumers == consumer)
            taken = used = 0
            for taken, item in enumerate(shuffled(mine, self.shuffle_buffer, rng), start=1):
                if taken <= done:  # already consumed before the checkpoint: replay the order, skip the work
                    continue
                try:
                    pending.append(self.encode(item))
                    used += 1
                except SkipSample as err:
                    skipped[err.reason] += 1
                if len(pending) == self.batch_size:
                    yield self._batch(pending, skipped, consumer, (epoch, taken))
                    pending, skipped = [], Counter()
            if taken == 0:
                raise ValueError(f"data consumer {consumer} of {consumers} got no sample in epoch {epoch}: "
                                 "fewer samples than ranks x workers")
            if used == 0 and done == 0:
                raise ValueError(f"every sample of epoch {epoch} was skipped ({dict(skipped)})")
            epoch, done = epoch + 1, 0
        if pending:
            yield self._batch(pending, skipped, consumer, (epoch, 0))

    def _batch(self, samples: list[dict], skipped: Counter, consumer: int, position: Position) -> dict:
        batch = self.collate(samples)
        batch["_consumer"], batch["_position"], batch["_skipped"] = consumer, position, dict(skipped)
        return batch


def loader(stream: BatchStream, num_workers: int) -> DataLoader:
    """A DataLoader over already-batched items (batching happens in the stream, after skipping).

    Workers are spawned, not forked: a training process holds threads (Ray's, S3 clients', CUDA's) and a
    forked child can inherit one of their locks held, and hang. They start once per run (the stream is endless).
    """
    return DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=False,
                      prefetch_factor=4 if num_workers else None,
                      multiprocessing_context="spawn" if num_workers else None)


def pad_sequences(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest one."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)
