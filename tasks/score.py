"""Reading the embedding cache for scoring: features for training the scorer (streamed one shard entry at a time)
and one shard's manifest rows. Scoring the pool itself is a pass of the selection engine
(``tasks.distributed_select``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.contracts import LOCATION_NAMES, MANIFEST
from tasks import block_sample
from tasks.block_sample import BLOCK_ROWS
from tasks.cache import CacheEntry, EntryCounts, entry_row_counts, sample_ids, threaded
from tasks.progress import Progress


@dataclass(frozen=True)
class CachedShard:
    """One shard of a run: its source's name, its URI, its name relative to the source root (the middle of
    its sample ids), its cache entry and that entry's counts once it is cached (``None`` before)."""

    source: str
    shard_uri: str
    shard: str
    entry: CacheEntry
    counts: EntryCounts | None = None


SPREAD = 4  # a large pool's fit sample comes from about SPREAD × max_rows rows of whole row groups


def load_features(
    shards: list[CachedShard],
    *,
    max_rows: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> np.ndarray:
    """Vectors of ``shards`` as float32 [n, dim]: all of them, or a seeded sample of ``max_rows`` that reads only
    the row groups holding it (``progress`` counts the shards and the vectors kept).

    Up to ``SPREAD × max_rows`` rows the sample is uniform over the rows; past that it is a block sample
    (``tasks.block_sample``) of at least ``SPREAD × max_rows / BLOCK_ROWS`` row groups, so its cost stays flat
    however large the pool grows. Row counts come from the shards' counts (from the entries' footers for a shard
    without them)."""
    if all(s.counts for s in shards):
        sizes = [s.counts.rows for s in shards if s.counts]
    else:
        sizes = entry_row_counts([s.entry for s in shards])
    total = sum(sizes)
    keep = None
    if max_rows is not None and total > max_rows:
        keep = _pool_sample(sizes, max_rows, seed)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def read(i: int) -> np.ndarray | None:
        if keep is None:
            return shards[i].entry.read_vectors() if sizes[i] else None
        inside = keep[np.searchsorted(keep, offsets[i]) : np.searchsorted(keep, offsets[i + 1])] - offsets[i]
        return shards[i].entry.read_vectors(inside) if len(inside) else None

    parts = []
    for x in threaded(read, list(range(len(shards)))):
        if x is not None:
            parts.append(x)
        if progress:
            progress.update(samples=0 if x is None else len(x))
    if not parts:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(parts)


def _pool_sample(sizes: list[int], max_rows: int, seed: int) -> np.ndarray:
    """Sorted pool positions of the fit's sample (see ``load_features``)."""
    total = sum(sizes)
    if total <= SPREAD * max_rows:  # the draw of a uniform sample, as small pools always had it
        return np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
    return block_sample.sample_positions(sizes, max_rows, min_blocks=-(-SPREAD * max_rows // BLOCK_ROWS),
                                         key=block_sample.salt(seed, "fit"))


def shard_manifest_rows(
    shard: CachedShard, keys: pa.Table, scores: np.ndarray, ranks: np.ndarray, selected: np.ndarray
) -> pa.Table:
    """One shard's manifest rows: ``keys`` (``CacheEntry.read_keys``: key and location columns) with the run's
    source name and sample ids applied, and that shard's slice of the scores, ranks and selection."""
    n = keys.num_rows
    return pa.table(
        {
            "sample_id": sample_ids(shard.source, shard.shard, keys["key"]),
            "source": pa.repeat(pa.scalar(shard.source, pa.string()), n),
            "shard_uri": pa.repeat(pa.scalar(shard.shard_uri, pa.string()), n),
            "key": keys["key"],
            "score": pa.array(scores, pa.float32()),
            "rank": pa.array(ranks, pa.int64()),
            "selected": pa.array(selected, pa.bool_()),
            **{name: keys[name] for name in LOCATION_NAMES},
        }
    ).cast(MANIFEST)
