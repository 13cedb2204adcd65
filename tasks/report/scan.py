"""One pass over a manifest's ``source``, ``shard_uri``, ``score`` and ``selected`` columns, batch by batch, for
everything a report needs from the pool: the score summaries (``ScoreSummary``), the example rows (lowest scores,
best-ranked selected), where each shard's rows start, and a block sample (``tasks.block_sample``) of every set —
each pool source, ``selected`` and ``pool``.

Memory holds the summaries, one start per shard and the samples' kept blocks, never a column of the pool; the time
is one read of four columns (two of them dictionary-encoded). The manifest may be one file or a partitioned
directory. A shard's rows sit together in the manifest in its cache entry's order, so a sampled row is (shard, row
in the shard's entry) and its vector is read from the entry's row group alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.contracts import MANIFEST, conform
from core.manifest import manifest_files
from core.settings import StorageConfig
from core.storage import take_rows
from tasks import block_sample
from tasks.report.scores import ScoreSummary

BATCH_ROWS = 262_144
MIN_BLOCKS = 32  # a set's sample spreads over at least this many cache row groups (per_set / 32 rows from each)
COLUMNS = ["source", "shard_uri", "score", "selected"]


@dataclass
class ManifestScan:
    """What one pass found. ``samples`` maps a set name to its sampled rows: ``position`` in the pool, ``source``
    (index into ``scores.sources``), ``selected``, ``shard`` (index into ``shard_uris``) and ``row`` (in the shard)."""

    rows: int
    scores: ScoreSummary
    shard_starts: np.ndarray
    shard_uris: list[str]
    samples: dict[str, dict[str, np.ndarray]]
    lowest: np.ndarray  # positions of the lowest-scored rows (ties: earlier first)
    top: np.ndarray  # positions of the best-ranked selected rows (highest score; ties: earlier first)


class _Smallest:
    """The ``k`` rows with the smallest (key, position), fed batch by batch."""

    def __init__(self, k: int) -> None:
        self.k, self.keys, self.positions = k, np.zeros(0), np.zeros(0, np.int64)

    def add(self, keys: np.ndarray, base: int, mask: np.ndarray | None = None) -> None:
        """Rows ``base + i`` with ``keys[i]`` (only where ``mask``)."""
        where = np.flatnonzero(mask) if mask is not None else None
        keys = np.asarray(keys if where is None else keys[where], np.float64)
        if self.k <= 0 or not len(keys) or (len(self.keys) == self.k and keys.min() > self.keys[-1]):
            return
        positions = base + (np.arange(len(keys), dtype=np.int64) if where is None else where.astype(np.int64))
        if len(keys) > self.k:  # every row tied with the k-th smallest stays: the earliest of them may win
            kth = np.partition(keys, self.k - 1)[self.k - 1]
            inside = keys <= kth
            keys, positions = keys[inside], positions[inside]
        keys, positions = np.concatenate([self.keys, keys]), np.concatenate([self.positions, positions])
        best = np.lexsort((positions, keys))[: self.k]
        self.keys, self.positions = keys[best], positions[best]


def _codes(column: pa.ChunkedArray, code: dict[str, int] | ScoreSummary) -> np.ndarray:
    """Integer codes of a string column's values (through each chunk's dictionary: one lookup per distinct value)."""
    lookup = code.code if isinstance(code, ScoreSummary) else lambda v: code.setdefault(v, len(code))
    parts = [np.zeros(0, np.int64)]
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk)
        table = np.array([lookup(v) for v in chunk.dictionary.to_pylist()], np.int64)
        parts.append(table[chunk.indices.to_numpy(zero_copy_only=False)] if len(table) else np.zeros(0, np.int64))
    return np.concatenate(parts)


def _batches(pf: pq.ParquetFile) -> Iterator[pa.Table]:
    """The file's ``COLUMNS`` in tables of about ``BATCH_ROWS`` rows: whole row groups read together, or a row group
    larger than that in batches of its own."""
    meta, groups, rows = pf.metadata, [], 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if n > BATCH_ROWS:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g], columns=COLUMNS):
                yield pa.Table.from_batches([batch])
            continue
        if rows + n > BATCH_ROWS and groups:
            yield pf.read_row_groups(groups, columns=COLUMNS)
            groups, rows = [], 0
        groups.append(g)
        rows += n
    if groups:
        yield pf.read_row_groups(groups, columns=COLUMNS)


def _score_range(fs: pafs.FileSystem, files: list[str]) -> tuple[float, float]:
    """The lowest and highest score, from the row-group statistics (a read of the column where a group lacks them)."""
    low, high = np.inf, -np.inf
    for path in files:
        meta = pq.ParquetFile(path, filesystem=fs).metadata
        column = [meta.schema.column(j).path for j in range(meta.num_columns)].index("score")
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(column).statistics
            if meta.row_group(g).num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:
                scores = pq.ParquetFile(path, filesystem=fs).read_row_group(g, columns=["score"])["score"]
                stats_min, stats_max = pc.min(scores).as_py(), pc.max(scores).as_py()
            else:
                stats_min, stats_max = stats.min, stats.max
            low, high = min(low, stats_min), max(high, stats_max)
    return (0.0, 0.0) if low > high else (float(low), float(high))


def _shard_cuts(column: pa.ChunkedArray, shards: dict[str, int], last: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a batch where a shard starts (its id differs from the row before; ``last`` is the id of the row
    before the batch) and those shards' ids (into ``shards``, which grows)."""
    cuts, ids, offset = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk)
        idx = chunk.indices.to_numpy(zero_copy_only=False)
        table = np.array([shards.setdefault(v, len(shards)) for v in chunk.dictionary.to_pylist()], np.int64)
        if len(idx):
            at = np.flatnonzero(idx[1:] != idx[:-1]) + 1
            at = at[table[idx[at]] != table[idx[at - 1]]]  # a dictionary may hold a value twice
            if table[idx[0]] != last:
                at = np.concatenate([[0], at])
            cuts.append(at + offset)
            ids.append(table[idx[at]])
            last = int(table[idx[-1]])
        offset += len(chunk)
    return np.concatenate(cuts), np.concatenate(ids)


@dataclass
class _Blocks:
    """A batch's blocks: first row (in the batch), rows, shard (index in pool order), row in that shard, id."""

    start: np.ndarray
    length: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    id: np.ndarray


def _blocks(n: int, cuts: np.ndarray, shard_starts: list[int], offset: int) -> _Blocks:
    """The blocks of a batch of ``n`` rows whose shards start at rows ``cuts`` (``shard_starts``: every shard's first
    position so far, these included; a batch not starting with a shard continues the last one before it)."""
    continues = not len(cuts) or cuts[0] != 0  # the batch's first rows belong to the shard before it
    bounds = np.concatenate([[0] if continues else [], cuts, [n]]).astype(np.int64)
    first_shard = len(shard_starts) - len(cuts) - int(continues)
    starts, shards, rows = [], [], []
    for j in range(len(bounds) - 1):
        a, b, shard = int(bounds[j]), int(bounds[j + 1]), first_shard + j
        row0 = offset + a - shard_starts[shard]
        step = np.arange(a + (-row0) % block_sample.BLOCK_ROWS, b, block_sample.BLOCK_ROWS, dtype=np.int64)
        at = step if len(step) and step[0] == a else np.concatenate([[a], step])
        starts.append(at)
        shards.append(np.full(len(at), shard, np.int64))
        rows.append(row0 + at - a)
    start, shard, row = (np.concatenate(x) for x in (starts, shards, rows))
    return _Blocks(start=start, length=np.diff(np.append(start, n)), shard=shard, row=row,
                   id=block_sample.block_ids(shard, row))


def _offer(sampler: Callable[[str], block_sample.BlockSample], sources: list[str], blocks: _Blocks, offset: int,
           codes: np.ndarray, selected: np.ndarray) -> None:
    """Offer a batch's blocks to every set's sample; rows are gathered only for the blocks a sample takes. A block
    lies in one shard, so in one source: its first row's."""
    source = codes[blocks.start]
    sets: dict[str, tuple[np.ndarray, Callable[[np.ndarray], np.ndarray] | None]] = {
        "pool": (blocks.length, None),
        "selected": (np.add.reduceat(selected, blocks.start, dtype=np.int64), lambda idx: selected[idx]),
    }
    for c in np.unique(source):
        sets[f"source/{sources[c]}"] = (np.where(source == c, blocks.length, 0), lambda idx, c=c: codes[idx] == c)
    for name, (counts, member) in sets.items():
        def gather(wanted: np.ndarray, member: Callable[[np.ndarray], np.ndarray] | None = member
                   ) -> dict[str, np.ndarray]:
            lengths, firsts = blocks.length[wanted], blocks.start[wanted]
            within = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            idx = np.repeat(firsts, lengths) + within
            rows = {"position": offset + idx, "block": np.repeat(blocks.id[wanted], lengths), "source": codes[idx],
                    "selected": selected[idx], "shard": np.repeat(blocks.shard[wanted], lengths),
                    "row": np.repeat(blocks.row[wanted], lengths) + within}
            return rows if member is None else {k: v[member(idx)] for k, v in rows.items()}

        if counts.any():
            sampler(name).add(blocks.id, counts, gather)


def scan_manifest(
    manifest_uri: str, storage: StorageConfig | None = None, *, per_set: int = 500, seed: int = 0, examples: int = 8
) -> ManifestScan:
    """Stream the manifest once: score summaries, ``examples`` example rows each way, shard starts and a seeded block
    sample of at most ``per_set`` rows for each pool source, ``selected`` and ``pool``."""
    fs, files = manifest_files(manifest_uri, storage)
    scores = ScoreSummary(*_score_range(fs, files))
    shards: dict[str, int] = {}
    starts: list[int] = []
    uris: list[int] = []  # shard id (into ``shards``) of each shard in pool order
    samplers: dict[str, block_sample.BlockSample] = {}
    lowest, top = _Smallest(examples), _Smallest(examples)
    offset, last = 0, -1  # rows before the batch, the shard id of the row before it

    def sampler(name: str) -> block_sample.BlockSample:
        if name not in samplers:
            key = block_sample.salt(seed, name)
            samplers[name] = block_sample.BlockSample(per_set, min_blocks=MIN_BLOCKS, key=key)
        return samplers[name]

    for path in files:
        reader = pq.ParquetFile(path, filesystem=fs, read_dictionary=["source", "shard_uri"])
        for batch in _batches(reader):
            n = batch.num_rows
            if not n:
                continue
            codes = _codes(batch.column("source"), scores)
            score = batch.column("score").to_numpy()
            selected = batch.column("selected").to_numpy()
            cuts, ids = _shard_cuts(batch.column("shard_uri"), shards, last)
            starts += (offset + cuts).tolist()
            uris += ids.tolist()
            last = uris[-1]
            scores.add(codes, score, selected)
            lowest.add(score, offset)
            top.add(-score, offset, selected)
            _offer(sampler, scores.sources, _blocks(n, cuts, starts, offset), offset, codes, selected)
            offset += n
    names = {v: k for k, v in shards.items()}
    samples = {name.removeprefix("source/"): s.result() for name, s in samplers.items()}
    return ManifestScan(rows=offset, scores=scores, shard_starts=np.asarray(starts, np.int64),
                        shard_uris=[names[i] for i in uris], samples=samples,
                        lowest=lowest.positions, top=top.positions)


def manifest_rows(manifest_uri: str, storage: StorageConfig | None, positions: np.ndarray) -> pa.Table:
    """The manifest's rows at pool ``positions`` (any order, a few), in that order: only their row groups are read."""
    fs, files = manifest_files(manifest_uri, storage)
    positions = np.asarray(positions, np.int64)
    wanted = np.unique(positions)
    parts, offset = [], 0
    for path in files:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f, pre_buffer=False)
            stop = offset + pf.metadata.num_rows
            inside = wanted[(wanted >= offset) & (wanted < stop)]
            if len(inside):
                parts.append(conform(take_rows(pf, inside - offset), MANIFEST))
        offset = stop
    table = pa.concat_tables(parts) if parts else MANIFEST.empty_table()
    return table.take(pa.array(np.searchsorted(wanted, positions), pa.int64()))
