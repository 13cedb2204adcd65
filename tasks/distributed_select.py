"""Distributed scoring and selection: Ray workers score the embedding cache, rank the whole pool with a
range-partitioned sort and write the manifest's files themselves; the driver only adds up summaries.

Three Ray Data passes, each over a few small task rows (``tasks.score_ranges`` holds the arithmetic):

1. **score** — one task per manifest file (``shards_per_file`` consecutive pool shards): read the cache entries,
   score each shard with one ``scorer.score`` call (as ``tasks.score.score_pool`` does, so the floats are the same),
   write a sorted run ``(bin, key, pos, score)`` to scratch and return a 65,536-bin score histogram.
2. **rank** — one task per score range cut from the summed histogram: read that range's rows from every run
   (row-group statistics skip the rest), sort them by (score desc, pool position), rank = rows above the range +
   place; write ``(pos, rank)`` sorted by position.
3. **write** — one task per manifest file: keys and locations from the cache, scores from its run, ranks for its
   positions;
   ``selected = rank < K``; publish ``part-NNNNN.parquet`` and return counts and one digest per shard.

The driver holds the histogram (512 KB), the ranges and one summary per file and per shard — never a per-sample
array — so its memory is flat in the pool's size. The manifest is a directory of Parquet files under
``manifest_uri`` that pandas, pyarrow, polars and ``ray.data.read_parquet`` read in one line (duckdb with
``/*.parquet``); the sidecar lists the files and a content hash over every shard's rows in pool order. Which files
exist depends on ``shards_per_file`` only and the hash on neither: the manifest is the same, bit for bit, whatever
the number of workers or ranges. Per-source caps need the pool's whole order and stay on the one-process path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from core.contracts import MANIFEST
from core.manifest import hash_part, sidecar_uri
from core.storage import arrow_filesystem, filesystem, join, publish, publish_bytes, write_parquet
from estimator.scorer import Scorer
from tasks import score_ranges as sr
from tasks.cache import EmbeddingCache, sample_ids, vectors
from tasks.score import CachedShard, shard_manifest_rows
from tasks.select import resolve_k

# Scratch row groups hold about one reader's slice (a score range of a run file, a file's positions of a range file),
# so that min/max statistics let each task of the next pass read little more than its own rows; a larger group
# made every range task read ~100x its rows at 10M samples (125 files x 125 ranges).
ROW_GROUP_MIN, ROW_GROUP_MAX = 1024, 65_536
HASH_SCHEME = "sha256 over the sha256 of each shard's rows (sample_id, score, rank, selected buffers), pool order"


@dataclass(frozen=True)
class DistributedSelection:
    """How the passes are cut: ``shards_per_file`` decides the manifest's files (keep it fixed for a pool),
    ``workers`` and ``ranges`` only the parallelism. ``cpus`` is what each task reserves."""

    shards_per_file: int = 64
    workers: int | None = None
    ranges: int | None = None
    cpus: float = 1.0


@dataclass(frozen=True)
class _Job:
    """What every worker needs, shipped once through the object store."""

    cache: EmbeddingCache
    pool: list[CachedShard]
    scratch: str
    manifest_uri: str


def score_select_write(
    *,
    cache: EmbeddingCache,
    pool: list[CachedShard],
    scorer: Scorer,
    manifest_uri: str,
    sidecar: dict[str, Any],
    k: int | None,
    fraction: float | None,
    options: DistributedSelection = DistributedSelection(),
) -> dict[str, Any]:
    """Score, rank and select the pool on the current Ray cluster and publish a partitioned manifest and its
    sidecar (returned; its ``k`` is the resolved K). Raises ``ValueError`` for a K the pool cannot meet."""
    job = _Job(cache=cache, pool=pool, scratch=manifest_uri.rstrip("/") + ".scratch", manifest_uri=manifest_uri)
    _clear(job)
    job_ref = ray.put(job)
    files = [
        {"part": q, "first": first, "stop": min(first + options.shards_per_file, len(pool))}
        for q, first in enumerate(range(0, len(pool), options.shards_per_file))
    ]
    run = {"num_cpus": options.cpus, "compute": ray.data.TaskPoolStrategy(size=options.workers)}

    hist = np.zeros(sr.BINS, np.int64)
    scorer_ref = ray.put(scorer)
    parts = options.ranges or len(files)
    score_args = {"job": job_ref, "scorer": scorer_ref, "readers": parts}
    for row in _items(files).map(_score_file, fn_kwargs=score_args, **run).iter_rows():
        np.add.at(hist, np.frombuffer(row["bins"], np.int32), np.frombuffer(row["counts"], np.int64))
    total = int(hist.sum())
    n = resolve_k(total, k=k, fraction=fraction)

    ranges = sr.plan_ranges(hist, parts)
    tasks = [{"range": i, **vars(r)} for i, r in enumerate(ranges)]
    rank_args = {"job": job_ref, "readers": len(files)}
    ranked = sum(row["rows"] for row in _items(tasks).map(_rank_range, fn_kwargs=rank_args, **run).iter_rows())
    if ranked != total:
        raise RuntimeError(f"ranked {ranked} rows of {total}: a scratch run changed under the job")

    summaries = {}
    for row in _items(files).map(_write_file, fn_kwargs={"job": job_ref, "k": n}, **run).iter_rows():
        summaries[row["part"]] = row
    digest = hashlib.sha256()
    per_source: dict[str, dict[str, int]] = {}
    for q in range(len(files)):
        digest.update(summaries[q]["digests"])
        for source, (pool_rows, chosen) in json.loads(summaries[q]["per_source"]).items():
            counts = per_source.setdefault(source, {"pool": 0, "selected": 0})
            counts["pool"] += pool_rows
            counts["selected"] += chosen
    _clear(job, manifest=False)
    sidecar = {
        **sidecar,
        "k": n,
        "rows": total,
        "selected": sum(c["selected"] for c in per_source.values()),
        "per_source": per_source,
        "content_sha256": digest.hexdigest(),
        "content_hash": HASH_SCHEME,
        "files": [_part_name(q) for q in range(len(files))],
        "manifest_uri": manifest_uri,
    }
    publish_bytes(sidecar_uri(manifest_uri), json.dumps(sidecar, indent=1, sort_keys=True).encode(), cache.storage)
    return sidecar


def _clear(job: _Job, *, manifest: bool = True) -> None:
    """Remove the scratch files (and, before a run, manifest files) an interrupted attempt left: a stale run, range
    or part file would otherwise be read with this attempt's."""
    fs, scratch = filesystem(job.scratch, job.cache.storage)
    if fs.exists(scratch):
        fs.rm(scratch, recursive=True)
    if manifest:
        _, root = filesystem(job.manifest_uri, job.cache.storage)
        for stale in fs.glob(root.rstrip("/") + "/part-*.parquet"):
            fs.rm(stale)


def _items(rows: list[dict]) -> ray.data.Dataset:
    """One block per task row, so every row is its own task."""
    return ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))


def _part_name(q: int) -> str:
    return f"part-{q:05d}.parquet"


def _scratch_group(rows: int, readers: int) -> int:
    """Row-group size of a scratch file of ``rows`` rows that ``readers`` tasks each read a slice of."""
    return int(np.clip(rows // max(1, readers), ROW_GROUP_MIN, ROW_GROUP_MAX))


def _score_file(row: dict, *, job: ray.ObjectRef, scorer: ray.ObjectRef, readers: int) -> dict:
    """Pass 1: score the file's shards, write the sorted run, return its histogram (non-empty bins only)."""
    job, scorer = ray.get(job), ray.get(scorer)
    keys, positions, scores = [np.zeros(0, np.uint32)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for index in range(row["first"], row["stop"]):
        shard = job.pool[index]
        table = job.cache.read(shard.entry, columns=["key", "embedding"])
        if table.num_rows == 0:  # every sample of the shard was quarantined
            continue
        ids = sample_ids(shard.source, shard.shard, table["key"]).to_pylist()
        s = np.asarray(scorer.score(vectors(table), ids), np.float32)
        scores.append(s)
        keys.append(sr.order_keys(s))
        positions.append(sr.pool_positions(index, table.num_rows))
    key, pos, score = np.concatenate(keys), np.concatenate(positions), np.concatenate(scores)
    order = sr.rank_order(key, pos)
    run = pa.table({"bin": sr.score_bins(key[order]), "key": key[order], "pos": pos[order], "score": score[order]})
    write_parquet(run, join(job.scratch, "scores", _part_name(row["part"])), job.cache.storage,
                  row_group_size=_scratch_group(len(key), readers))
    hist = sr.histogram(key)
    bins = np.flatnonzero(hist).astype(np.int32)
    return {"part": row["part"], "bins": bins.tobytes(), "counts": hist[bins].tobytes()}


def _rank_range(row: dict, *, job: ray.ObjectRef, readers: int) -> dict:
    """Pass 2: rank every row of one score range and write (pos, rank) sorted by position."""
    job = ray.get(job)
    inside = (pc.field("bin") >= row["low"]) & (pc.field("bin") < row["high"])
    table = _dataset(job, "scores").to_table(columns=["key", "pos"], filter=inside)
    key, pos = table["key"].to_numpy(), table["pos"].to_numpy()
    if len(key) != row["rows"]:
        raise RuntimeError(f"score range {row['range']}: {len(key)} rows, the histogram said {row['rows']}")
    rank = np.empty(len(key), np.int64)
    rank[sr.rank_order(key, pos)] = row["offset"] + np.arange(len(key), dtype=np.int64)
    by_pos = np.argsort(pos)  # positions are unique: sorted, a write task's reads are a few row groups
    write_parquet(pa.table({"pos": pos[by_pos], "rank": rank[by_pos]}),
                  join(job.scratch, "ranks", f"range-{row['range']:05d}.parquet"), job.cache.storage,
                  row_group_size=_scratch_group(len(key), readers))
    return {"range": row["range"], "rows": len(key)}


def _write_file(row: dict, *, job: ray.ObjectRef, k: int) -> dict:
    """Pass 3: write one manifest file in pool order; return per-source counts and one digest per shard."""
    job = ray.get(job)
    first, stop = row["first"], row["stop"]
    run = pq.read_table(_scratch_path(job, "scores", _part_name(row["part"])), filesystem=_fs(job),
                        columns=["pos", "score"]).sort_by("pos")
    span = (pc.field("pos") >= (first << 32)) & (pc.field("pos") < (stop << 32))
    ranks = _dataset(job, "ranks").to_table(filter=span).sort_by("pos")
    if not ranks["pos"].equals(run["pos"]):
        raise RuntimeError(f"manifest file {row['part']}: ranks do not cover its scored rows")
    # numpy slices make fresh Arrow arrays: a shard's hashed buffers never depend on where it sits in the file
    scores, all_ranks = run["score"].to_numpy(), ranks["rank"].to_numpy()
    digests, per_source, offset = [], {}, 0
    with publish(join(job.manifest_uri, _part_name(row["part"])), job.cache.storage) as f, \
            pq.ParquetWriter(f, MANIFEST) as writer:
        for index in range(first, stop):
            shard = job.pool[index]
            keys = job.cache.read_keys(shard.entry)
            n = keys.num_rows
            rank = all_ranks[offset : offset + n]
            part = shard_manifest_rows(shard, keys, scores[offset : offset + n], rank, rank < k)
            offset += n
            writer.write_table(part)
            counts = per_source.setdefault(shard.source, [0, 0])
            counts[0] += n
            counts[1] += pc.sum(part["selected"]).as_py() or 0
            if n:
                digest = hashlib.sha256()
                hash_part(digest, part)
                digests.append(digest.digest())
    return {"part": row["part"], "digests": b"".join(digests), "per_source": json.dumps(per_source)}


def _fs(job: _Job) -> Any:
    return arrow_filesystem(job.scratch, job.cache.storage)[0]


def _scratch_path(job: _Job, *parts: str) -> str:
    return arrow_filesystem(join(job.scratch, *parts), job.cache.storage)[1]


def _dataset(job: _Job, name: str) -> pads.Dataset:
    return pads.dataset(_scratch_path(job, name), filesystem=_fs(job), format="parquet")
