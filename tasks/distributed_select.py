"""Distributed scoring and selection: Ray workers score the embedding cache, rank the whole pool with a
range-partitioned sort and write the manifest's files themselves; the driver only adds up summaries.

Three passes of plain Ray tasks, one per small task row (``tasks.score_ranges`` holds the arithmetic):

1. **score** — one task per manifest file (``shards_per_file`` consecutive pool shards): read the cache entries,
   score each shard with one ``scorer.score`` call (as ``tasks.score.score_pool`` does, so the floats are the same),
   write the file's ``(pos, score)`` rows and its run ``(key, pos)`` sorted best first, with the run's index (where
   each score bin ends), and return a 65,536-bin score histogram.
2. **rank** — one task per score range cut from the summed histogram: read that range's slice of every run (the
   index gives it exactly), sort it by (score desc, pool position), rank = rows above the range + place; write
   ``(pos, rank)`` in pool order and where each manifest file's positions start in it.
3. **write** — one task per manifest file: keys and locations from the cache, scores from its rows, ranks from its
   slice of every range; ``selected = rank < K``; publish ``part-NNNNN.parquet`` and return counts and one digest
   per shard.

Scratch files are fixed-width records (``tasks.scratch_records``), so each (file, range) pair of the exchange is
one exact ranged read.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from core.contracts import MANIFEST
from core.manifest import hash_part, sidecar_uri
from core.storage import filesystem, join, publish, publish_bytes
from estimator.scorer import Scorer
from tasks import score_ranges as sr
from tasks import scratch_records as rec
from tasks.cache import EmbeddingCache, sample_ids, vectors
from tasks.progress import Progress
from tasks.score import CachedShard, shard_manifest_rows
from tasks.select import resolve_k

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

    hist = np.zeros(sr.BINS, np.int64)
    for row in run_tasks("score", _score_file, files, options, job=job_ref, scorer=ray.put(scorer)):
        np.add.at(hist, np.frombuffer(row["bins"], np.int32), np.frombuffer(row["counts"], np.int64))
    total = int(hist.sum())
    n = resolve_k(total, k=k, fraction=fraction)

    ranges = sr.plan_ranges(hist, options.ranges or len(files))
    tasks = [{"range": i, **vars(r)} for i, r in enumerate(ranges)]
    ranked = sum(row["rows"] for row in run_tasks("rank", _rank_range, tasks, options, job=job_ref, files=len(files),
                                             shards_per_file=options.shards_per_file))
    if ranked != total:
        raise RuntimeError(f"ranked {ranked} rows of {total}: a scratch run changed under the job")

    summaries = {row["part"]: row for row in run_tasks("write manifest", _write_file, files, options, job=job_ref,
                                                   k=n, ranges=len(ranges))}
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


def run_tasks(step: str, fn: Callable[..., dict], rows: list[dict], options: DistributedSelection,
         **shared: Any) -> Iterator[dict]:
    """``fn(row, **shared)`` for every row, one Ray task each (``options.cpus`` each, at most ``options.workers`` at
    once), yielding the results as they finish. Plain tasks rather than a Ray Data job per pass: a pass is a few
    hundred task rows, and a Ray Data job's start-up cost seconds each time."""
    remote = ray.remote(num_cpus=options.cpus)(fn)
    limit = options.workers or len(rows)
    queue, pending = list(reversed(rows)), []
    with Progress(step, total=len(rows), unit="tasks") as progress:
        while queue or pending:
            while queue and len(pending) < limit:
                pending.append(remote.remote(queue.pop(), **shared))
            done, pending = ray.wait(pending, num_returns=1)
            progress.update()
            yield ray.get(done[0])


def _part_name(q: int) -> str:
    return f"part-{q:05d}.parquet"


def _scratch(job: _Job, *parts: str) -> str:
    return join(job.scratch, *parts)


def _score_file(row: dict, *, job: _Job, scorer: Scorer) -> dict:
    """Pass 1: score the file's shards; write its rows in pool order and its sorted run (with the run's index);
    return its histogram (non-empty bins only)."""
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
    rows = np.empty(len(key), rec.ROWS)
    rows["pos"], rows["score"] = pos, score
    order = sr.rank_order(key, pos)
    run = np.empty(len(key), rec.RUN)
    run["key"], run["pos"] = key[order], pos[order]
    name, storage = f"part-{row['part']:05d}", job.cache.storage
    rec.write(_scratch(job, "scores", name + ".rows"), rows, storage)
    rec.write(_scratch(job, "scores", name + ".run"), run, storage)
    rec.write(_scratch(job, "scores", name + ".index"), rec.run_index(sr.score_bins(run["key"])), storage)
    hist = sr.histogram(key)
    bins = np.flatnonzero(hist).astype(np.int32)
    return {"part": row["part"], "bins": bins.tobytes(), "counts": hist[bins].tobytes()}


def _rank_range(row: dict, *, job: _Job, files: int, shards_per_file: int) -> dict:
    """Pass 2: rank every row of one score range — its slice of every run — and write (pos, rank) in pool order
    with where each manifest file's rows start."""
    storage, slices = job.cache.storage, []
    for q in range(files):
        name = f"part-{q:05d}"
        start, stop = rec.run_slice(rec.read(_scratch(job, "scores", name + ".index"), rec.RUN_INDEX, storage),
                                    row["low"], row["high"])
        slices.append(rec.read(_scratch(job, "scores", name + ".run"), rec.RUN, storage, start, stop))
    run = np.concatenate(slices)
    key, pos = run["key"], run["pos"]
    if len(key) != row["rows"]:
        raise RuntimeError(f"score range {row['range']}: {len(key)} rows, the histogram said {row['rows']}")
    rank = np.empty(len(key), np.int64)
    rank[sr.rank_order(key, pos)] = row["offset"] + np.arange(len(key), dtype=np.int64)
    by_pos = np.argsort(pos)  # positions are unique
    ranks = np.empty(len(key), rec.RANKS)
    ranks["pos"], ranks["rank"] = pos[by_pos], rank[by_pos]
    firsts = np.arange(files + 1, dtype=np.int64) * shards_per_file << np.int64(32)
    offsets = np.searchsorted(ranks["pos"], firsts).astype(rec.OFFSETS)
    name = f"range-{row['range']:05d}"
    rec.write(_scratch(job, "ranks", name + ".ranks"), ranks, storage)
    rec.write(_scratch(job, "ranks", name + ".offsets"), offsets, storage)
    return {"range": row["range"], "rows": len(key)}


def _write_file(row: dict, *, job: _Job, k: int, ranges: int) -> dict:
    """Pass 3: write one manifest file in pool order; return per-source counts and one digest per shard."""
    first, stop, storage = row["first"], row["stop"], job.cache.storage
    rows = rec.read(_scratch(job, "scores", f"part-{row['part']:05d}.rows"), rec.ROWS, storage)
    slices = []
    for r in range(ranges):
        name = f"range-{r:05d}"
        start, end = rec.read(_scratch(job, "ranks", name + ".offsets"), rec.OFFSETS, storage, row["part"],
                              row["part"] + 2)
        slices.append(rec.read(_scratch(job, "ranks", name + ".ranks"), rec.RANKS, storage, int(start), int(end)))
    ranks = np.concatenate(slices)
    ranks = ranks[np.argsort(ranks["pos"])]
    if not np.array_equal(ranks["pos"], rows["pos"]):
        raise RuntimeError(f"manifest file {row['part']}: ranks do not cover its scored rows")
    # numpy slices make fresh Arrow arrays: a shard's hashed buffers never depend on where it sits in the file
    scores, all_ranks = rows["score"].copy(), ranks["rank"].copy()
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
