"""The selection engine: Ray workers score the embedding cache, rank the whole pool with a range-partitioned sort,
choose the K and write the manifest's files themselves; the driver only adds up summaries. It is the one way a
curation selects: with one worker on a laptop, with many on a cluster, and the same bytes either way.

Passes of Ray tasks on ``tasks.executor`` (``RayTasks``), one per small unit: the executor keeps the in-flight bound,
retries a transient fault under its one policy and names a unit that fails (``tasks.score_ranges`` holds the
arithmetic, ``tasks.select`` the selection rules):

1. **score** — one task per manifest file (``shards_per_file`` consecutive pool shards): read the cache entries,
   score each shard with one ``scorer.score`` call, write the file's ``(pos, score)`` rows and, per *order*, its run
   ``(key, pos)`` sorted best first with the run's index (where each score bin ends), and return a 65,536-bin
   histogram per order. The ``score`` order gives the manifest's rank; ``mode: importance`` adds the ``draw`` order,
   whose keys are the scores plus per-row seeded Gumbel noise (``select.draw_keys``).
2. **rank** — per order, one task per key range cut from the summed histogram: read that range's slice of every run
   (the index gives it exactly), sort it by (key desc, pool position), place = rows above the range + place within;
   write ``(pos, place)`` in pool order and where each manifest file's positions start in it.
3. **pick** — only with per-source caps or near-duplicate removal: one task walks the chosen order (``draw`` or
   ``score``) range by range from the top with a ``select.Picker`` until K are kept, and writes the kept positions
   in pool order. Without them the K are simply the first K places of the chosen order.
4. **write** — one task per manifest file: keys and locations from the cache, scores from its rows, ranks and the
   selection from its slice of every range (or of the kept positions); publish ``part-NNNNN.parquet`` and return
   counts and one digest per shard.

With ``filters`` (``tasks.filter_passes``: CLIP score, probes, pool-wide dedup), their passes run first and publish
the removals with their stage and reason; the pick pass skips what they removed.

Scratch files are fixed-width records (``tasks.scratch_records``), so each (file, range) pair of the exchange is
one exact ranged read.

The driver holds the histograms (512 KB each), the ranges and one summary per file and per shard — never a
per-sample array — so its memory is flat in the pool's size; the pick task's grows with K (the kept positions and,
for dedup, their vectors). The manifest is a directory of Parquet files under ``manifest_uri`` that pandas, pyarrow,
polars and ``ray.data.read_parquet`` read in one line (duckdb with ``/*.parquet``); the sidecar lists the files and a
content hash over every shard's rows in pool order. Which files exist depends on ``shards_per_file`` only and the
hash on neither: every key, tie and draw is a function of the samples, so the manifest is the same, bit for bit,
whatever the number of workers or ranges.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pyarrow.compute as pc

from core.manifest import hash_part, manifest_writer, sidecar_uri
from core.storage import filesystem, join, publish, publish_bytes
from estimator.scorer import Scorer
from tasks import filter_passes as fp
from tasks import score_ranges as sr
from tasks import scratch_records as rec
from tasks.cache import EmbeddingCache, sample_ids, vectors
from tasks.executor import Job, Threads, run
from tasks.executor.on_ray import RayTasks
from tasks.funnel import funnel
from tasks.score import CachedShard, shard_manifest_rows
from tasks.select import Picker, SelectionConfig, draw_keys, resolve_k

HASH_SCHEME = "sha256 over the sha256 of each shard's rows (sample_id, score, rank, selected buffers), pool order"
CHUNK = 1024  # candidates the pick pass offers at once (one matrix of within-chunk similarities)


@dataclass(frozen=True)
class DistributedSelection:
    """How the passes are cut: ``shards_per_file`` decides the manifest's files (keep it fixed for a pool),
    ``workers`` and ``ranges`` only the parallelism. ``cpus`` is what each task reserves. ``in_process``: every
    unit on one thread of this process instead of Ray tasks (the same manifest), for a pool whose job costs less
    than starting Ray."""

    shards_per_file: int = 64
    workers: int | None = None
    ranges: int | None = None
    cpus: float = 1.0
    in_process: bool = False


@dataclass(frozen=True)
class _Job:
    """What every worker needs, shipped once per pass with its work (``RayTasks`` puts the work in the object
    store once, never per task). ``columns``: the part of a vector that
    near-duplicate removal compares (what the scorer reads)."""

    cache: EmbeddingCache
    pool: list[CachedShard]
    scratch: str
    manifest_uri: str
    selection: SelectionConfig
    caps: dict[str, int]
    columns: slice
    filters: fp.VectorFilters | None = None  # CLIP score, probes, pool-wide dedup: passes before the score pass
    groups: int = 0  # dedup tasks run (set once they have)

    @property
    def orders(self) -> tuple[str, ...]:
        return ("score", "draw") if self.selection.mode == "importance" else ("score",)

    @property
    def chosen_by(self) -> str:
        """The order whose first K (past caps and duplicates) are the selection."""
        return self.orders[-1]

    @property
    def walks(self) -> bool:
        return bool(self.caps) or self.selection.dedup_threshold is not None or self.filtering

    @property
    def filtering(self) -> bool:
        return self.filters is not None and self.filters.active

    @property
    def removed_uri(self) -> str:  # the filters' removals: errors-contract rows, one file per manifest file
        return self.manifest_uri.rstrip("/") + ".removed"


def score_select_write(
    *,
    cache: EmbeddingCache,
    pool: list[CachedShard],
    scorer: Scorer,
    manifest_uri: str,
    sidecar: dict[str, Any],
    k: int | None,
    fraction: float | None,
    selection: SelectionConfig | None = None,
    per_source_cap: dict[str, int] | None = None,
    options: DistributedSelection = DistributedSelection(),
    filters: fp.VectorFilters | None = None,
) -> dict[str, Any]:
    """Score, rank and select the pool on the current Ray cluster and publish a partitioned manifest and its
    sidecar (returned; its ``k`` is the resolved K, its ``selection`` how the K were chosen). Raises ``ValueError``
    for a K the pool cannot meet, or that caps, near-duplicate removal and ``filters`` leave it short of. What the
    filters remove keeps its score and rank, is never selected, and is recorded (``removed_uri``, ``filtered``)."""
    job = _Job(cache=cache, pool=pool, scratch=manifest_uri.rstrip("/") + ".scratch", manifest_uri=manifest_uri,
               selection=selection or SelectionConfig(), caps=dict(per_source_cap or {}),
               columns=scorer_columns(scorer), filters=filters)
    _clear(job)
    try:
        return _run(job, scorer, sidecar, k=k, fraction=fraction, options=options)
    finally:
        _clear(job, manifest=False)


def scorer_columns(scorer: Scorer) -> slice:
    """The vector columns ``scorer`` reads (the whole vector for one that reads none, the random baseline): what
    near-duplicate removal compares."""
    columns = getattr(scorer, "columns", None)
    if isinstance(columns, tuple):
        columns = slice(*columns)
    return columns if isinstance(columns, slice) else slice(None)


def _run(job: _Job, scorer: Scorer, sidecar: dict[str, Any], *, k: int | None,
         fraction: float | None, options: DistributedSelection) -> dict[str, Any]:
    spf = options.shards_per_file
    files = [{"part": q, "first": first, "stop": min(first + spf, len(job.pool))}
             for q, first in enumerate(range(0, len(job.pool), spf))]

    filtered = fp.run_filter_passes(run_pass, pool=job.pool, filters=job.filters, scratch=job.scratch,
                                    storage=job.cache.root.storage, files=files, shards_per_file=spf, options=options,
                                    removed_uri=job.removed_uri) if job.filtering else fp.Filtered({}, 0)
    job = replace(job, groups=filtered.groups)
    hists = {order: np.zeros(sr.BINS, np.int64) for order in job.orders}
    for row in run_pass("score", partial(_score_file, job=job, scorer=scorer), files, options, name=_file_name):
        for order, (bins, counts) in row["hists"].items():
            np.add.at(hists[order], np.frombuffer(bins, np.int32), np.frombuffer(counts, np.int64))
    total = int(hists["score"].sum())
    n = resolve_k(total - filtered.total, k=k, fraction=fraction)  # of what the filters left

    ranges: dict[str, int] = {}
    for order in job.orders:
        planned = sr.plan_ranges(hists[order], options.ranges or len(files))
        ranges[order] = len(planned)
        tasks = [{"range": i, "order": order, **vars(r)} for i, r in enumerate(planned)]
        rank = partial(_rank_range, job=job, files=len(files), shards_per_file=spf)
        ranked = sum(row["rows"] for row in run_pass(f"rank ({order})", rank, tasks, options, timing="select",
                                                     name=lambda t: f"{t['order']} range {t['range']}"))
        if ranked != total:
            raise RuntimeError(f"ranked {ranked} rows of {total} by {order}: a scratch run changed under the job")

    skipped = 0
    if job.walks:
        pick = partial(_pick, job=job, k=n, files=len(files), shards_per_file=spf)
        [picked] = run_pass("pick", pick, [{"ranges": ranges[job.chosen_by]}], options, name=lambda _: "pick",
                            timing="select")
        if picked["error"]:
            raise ValueError(picked["error"])
        skipped = picked["duplicates"]

    write = partial(_write_file, job=job, k=n, ranges=ranges)
    written = run_pass("write manifest", write, files, options, name=_file_name, timing="manifest")
    summaries = {row["part"]: row for row in written}
    digest = hashlib.sha256()
    per_source: dict[str, dict[str, int]] = {}
    for q in range(len(files)):
        digest.update(summaries[q]["digests"])
        for source, (pool_rows, chosen) in json.loads(summaries[q]["per_source"]).items():
            counts = per_source.setdefault(source, {"pool": 0, "selected": 0})
            counts["pool"] += pool_rows
            counts["selected"] += chosen
    sidecar = {
        **sidecar,
        "k": n,
        "selection": job.selection.record(skipped),
        "rows": total,
        "selected": sum(c["selected"] for c in per_source.values()),
        "per_source": per_source,
        "content_sha256": digest.hexdigest(),
        "content_hash": HASH_SCHEME,
        "files": [_part_name(q) for q in range(len(files))],
        "manifest_uri": job.manifest_uri,
        "filtered": filtered.counts,
        "dedup_unhashed": filtered.unhashed,  # compared without a content hash (entries cached before hashes)
        "funnel": funnel(per_source, sidecar.get("screened", {}), filtered.counts),
        "removed_uri": job.removed_uri if job.filtering else None,
    }
    publish_bytes(sidecar_uri(job.manifest_uri), json.dumps(sidecar, indent=1, sort_keys=True).encode(),
                  job.cache.root.storage)
    return sidecar


def _clear(job: _Job, *, manifest: bool = True) -> None:
    """Remove the scratch files (and, before a run, manifest files) an interrupted attempt left: a stale run, range
    or part file would otherwise be read with this attempt's."""
    fs, scratch = filesystem(job.scratch, job.cache.root.storage)
    if fs.exists(scratch):
        fs.rm(scratch, recursive=True)
    if manifest:
        for uri in (job.manifest_uri, job.removed_uri):
            _, root = filesystem(uri, job.cache.root.storage)
            for stale in fs.glob(root.rstrip("/") + "/part-*.parquet"):
                fs.rm(stale)


def run_pass(step: str, work: Callable[[dict], dict], units: Sequence[dict], options: DistributedSelection, *,
             name: Callable[[dict], str], timing: str | None = None) -> list[dict]:
    """``work(unit)`` for every unit, one Ray task each (``options.cpus`` each, at most ``options.workers`` at once),
    on the executor: the summary rows, in any order. Plain tasks rather than a Ray Data job per pass: a pass is a few
    hundred units, and a Ray Data job's start-up costs seconds each time. A unit that fails under the executor's
    policy fails the pass (``JobFailed``, naming it) once the others finish; nothing of the pass is published.
    ``timing``: the step timing the pass's wall time adds to (default: ``step``; the rank and pick passes: select)."""
    executor = Threads(workers=1) if options.in_process else RayTasks(cpus=options.cpus, in_flight=options.workers)
    report = run(Job(step=step, units=units, work=work, name=name, unit_label="tasks", timing=timing), executor)
    report.raise_for_failed("no manifest was published; a rerun selects again")
    return report.rows


def _file_name(unit: dict) -> str:
    return _part_name(unit["part"])


def _part_name(q: int) -> str:
    return f"part-{q:05d}.parquet"


def _scratch(job: _Job, *parts: str) -> str:
    return join(job.scratch, *parts)


def _score_file(row: dict, *, job: _Job, scorer: Scorer) -> dict:
    """Pass 1: score the file's shards; write its rows in pool order and, per order, its sorted run (with the run's
    index); return each order's histogram (non-empty bins only)."""
    positions, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    keys: dict[str, list[np.ndarray]] = {order: [np.zeros(0, np.uint32)] for order in job.orders}
    for index in range(row["first"], row["stop"]):
        shard = job.pool[index]
        table = shard.entry.read(["key", "embedding"])
        if table.num_rows == 0:  # every sample of the shard was quarantined
            continue
        ids = sample_ids(shard.source, shard.shard, table["key"]).to_pylist()
        s = np.asarray(scorer.score(vectors(table), ids), np.float32)
        scores.append(s)
        positions.append(sr.pool_positions(index, table.num_rows))
        keys["score"].append(sr.order_keys(s))
        if "draw" in keys:
            draws = draw_keys(s, seed=job.selection.seed, source=shard.source, shard=shard.shard)
            keys["draw"].append(sr.order_keys(draws))
    pos, storage, name = np.concatenate(positions), job.cache.root.storage, f"part-{row['part']:05d}"
    rows = np.empty(len(pos), rec.ROWS)
    rows["pos"], rows["score"] = pos, np.concatenate(scores)
    rec.write(_scratch(job, "scores", name + ".rows"), rows, storage)
    hists = {}
    for order, parts in keys.items():
        key = np.concatenate(parts)
        ranked = sr.rank_order(key, pos)
        run = np.empty(len(key), rec.RUN)
        run["key"], run["pos"] = key[ranked], pos[ranked]
        rec.write(_scratch(job, order, name + ".run"), run, storage)
        rec.write(_scratch(job, order, name + ".index"), rec.run_index(sr.score_bins(run["key"])), storage)
        hist = sr.histogram(key)
        bins = np.flatnonzero(hist).astype(np.int32)
        hists[order] = (bins.tobytes(), hist[bins].tobytes())
    return {"part": row["part"], "hists": hists}


def _rank_range(row: dict, *, job: _Job, files: int, shards_per_file: int) -> dict:
    """Pass 2: place every row of one key range of one order — its slice of every run — and write (pos, place) in
    pool order with where each manifest file's rows start."""
    storage, order, slices = job.cache.root.storage, row["order"], []
    fs, runs = filesystem(_scratch(job, order), storage)
    for q in range(files):
        name = f"{runs}/part-{q:05d}"
        start, stop = rec.run_slice(rec.read_at(fs, name + ".index", rec.RUN_INDEX), row["low"], row["high"])
        slices.append(rec.read_at(fs, name + ".run", rec.RUN, start, stop))
    run = np.concatenate(slices)
    key, pos = run["key"], run["pos"]
    if len(key) != row["rows"]:
        raise RuntimeError(f"{order} range {row['range']}: {len(key)} rows, the histogram said {row['rows']}")
    place = np.empty(len(key), np.int64)
    place[sr.rank_order(key, pos)] = row["offset"] + np.arange(len(key), dtype=np.int64)
    by_pos = np.argsort(pos)  # positions are unique
    ranks = np.empty(len(key), rec.RANKS)
    ranks["pos"], ranks["rank"] = pos[by_pos], place[by_pos]
    name = f"range-{row['range']:05d}"
    rec.write(_scratch(job, "ranks", order, name + ".ranks"), ranks, storage)
    rec.write(_scratch(job, "ranks", order, name + ".offsets"), rec.file_offsets(ranks["pos"], files, shards_per_file),
              storage)
    return {"range": row["range"], "rows": len(key)}


def _pick(row: dict, *, job: _Job, k: int, files: int, shards_per_file: int) -> dict:
    """Pass 3: walk the chosen order from the top, range by range, keeping candidates that fit the caps and are no
    near-duplicate of a kept one, until ``k`` are kept; write the kept positions in pool order."""
    picker = Picker(k, caps=job.caps, dedup_threshold=job.selection.dedup_threshold)
    kept = [np.zeros(0, np.int64)]
    removed = fp.removed_positions(files, job.scratch, job.cache.root.storage, job.groups) if job.filtering else None
    for r in range(row["ranges"]):
        places = rec.read(_scratch(job, "ranks", job.chosen_by, f"range-{r:05d}.ranks"), rec.RANKS,
                          job.cache.root.storage)
        candidates = places["pos"][np.argsort(places["rank"])]
        for start in range(0, len(candidates), CHUNK):
            chunk = candidates[start : start + CHUNK]
            if removed is not None and not len(chunk := chunk[~np.isin(chunk, removed)]):
                continue  # all removed by a filter: ranked, never chosen
            sources = [job.pool[i].source for i in (chunk >> np.int64(32)).tolist()]
            x = _vectors(job, chunk) if job.selection.dedup_threshold is not None else None
            kept.append(chunk[picker.offer(sources, x)])
            if picker.done:
                break
        if picker.done:
            break
    pos, storage = np.sort(np.concatenate(kept)), job.cache.root.storage
    rec.write(_scratch(job, "picked", "kept.pos"), pos.astype(rec.OFFSETS), storage)
    rec.write(_scratch(job, "picked", "kept.offsets"), rec.file_offsets(pos, files, shards_per_file), storage)
    return {"duplicates": picker.duplicates, "error": None if picker.done else str(picker.shortfall())}


def _vectors(job: _Job, positions: np.ndarray) -> np.ndarray:
    """The compared vectors of pool ``positions`` (in their order), reading only the row groups that hold them."""
    return fp.read_rows(job.pool, positions, job.columns)


def _file_places(job: _Job, order: str, part: int, ranges: int) -> np.ndarray:
    """One manifest file's (pos, place) rows of ``order``, from its slice of every range, in pool order."""
    fs, root = filesystem(_scratch(job, "ranks", order), job.cache.root.storage)
    slices = []
    for r in range(ranges):
        base = f"{root}/range-{r:05d}"
        start, end = rec.read_at(fs, base + ".offsets", rec.OFFSETS, part, part + 2)
        slices.append(rec.read_at(fs, base + ".ranks", rec.RANKS, int(start), int(end)))
    places = np.concatenate(slices)
    return places[np.argsort(places["pos"])]


def _chosen(job: _Job, part: int, by_score: np.ndarray, k: int, ranges: dict[str, int]) -> np.ndarray:
    """Which of one manifest file's rows (``by_score``: their (pos, rank) by score, pool order) are selected."""
    if job.walks:
        base, storage = _scratch(job, "picked", "kept"), job.cache.root.storage
        start, end = rec.read(base + ".offsets", rec.OFFSETS, storage, part, part + 2)
        return np.isin(by_score["pos"], rec.read(base + ".pos", rec.OFFSETS, storage, int(start), int(end)))
    if job.chosen_by == "score":  # top-K: the ranks in hand
        return by_score["rank"] < k
    return _file_places(job, job.chosen_by, part, ranges[job.chosen_by])["rank"] < k


def _write_file(row: dict, *, job: _Job, k: int, ranges: dict[str, int]) -> dict:
    """Pass 4: write one manifest file in pool order; return per-source counts and one digest per shard."""
    first, stop, storage = row["first"], row["stop"], job.cache.root.storage
    rows = rec.read(_scratch(job, "scores", f"part-{row['part']:05d}.rows"), rec.ROWS, storage)
    ranks = _file_places(job, "score", row["part"], ranges["score"])
    if not np.array_equal(ranks["pos"], rows["pos"]):
        raise RuntimeError(f"manifest file {row['part']}: ranks do not cover its scored rows")
    # numpy slices make fresh Arrow arrays: a shard's hashed buffers never depend on where it sits in the file
    scores, all_ranks = rows["score"].copy(), ranks["rank"].copy()
    chosen = _chosen(job, row["part"], ranks, k, ranges)
    digests, per_source, offset = [], {}, 0
    with publish(join(job.manifest_uri, _part_name(row["part"])), storage) as f, manifest_writer(f) as writer:
        for index in range(first, stop):
            shard = job.pool[index]
            keys = shard.entry.read_keys()
            n = keys.num_rows
            part = shard_manifest_rows(shard, keys, scores[offset : offset + n], all_ranks[offset : offset + n],
                                       chosen[offset : offset + n])
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

