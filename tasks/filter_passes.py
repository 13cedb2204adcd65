"""The filters that read cached vectors, as passes of the selection engine (``tasks.distributed_select``), run before
it scores: the CLIP-score threshold (the cosine of the image and text halves of a two-tower vector), the user's
linear probes, and pool-wide dedup (exact copies by content hash, then SemDeDup: ``tasks.filters.dedup``). A
removed sample keeps its manifest row and score (every score is kept) but is never selected; it is recorded with
its stage and reason.

1. **centroids** — one task fits spherical k-means on a seeded sample of the pool (``SAMPLE_ROWS`` at most).
2. **filter** — one task per manifest file: the thresholds and probes on each shard's vectors, then each remaining
   row assigned to its nearest centroid; writes the file's removals (pos, reason) in pool order and its dedup
   candidates (with their content hashes, and their unit vectors in float16) sorted by cluster, with an index of
   where each cluster starts.
3. **dedup** — one task per group of clusters: its clusters' slices of every file's candidates and vectors (exact
   ranged reads; read from the cache instead, a cluster's members, spread over the whole pool, touched nearly every
   row group once per cluster), each cluster in walk order (nearest the centre first): exact copies (same content
   hash) of an earlier row go first, then the rest is walked for near-duplicates (``cluster_duplicates``, in row
   blocks); writes its removals in pool order with where each manifest file's rows start.

A cache entry written before content hashes were kept has none: its samples get semantic dedup only (an exact copy
among them is still a near-duplicate, so it goes as ``dedup:semantic``), and the run counts them (``unhashed``).

Memory: a filter task holds one shard's vectors at a time and its file's candidates, a dedup task its clusters'
candidates; the centroids are k x D. Scratch holds 2 x D + 25 bytes per candidate (``bench dedup``: 1M samples).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.contracts import ERRORS
from core.settings import StorageConfig
from core.storage import filesystem, join, publish
from tasks import score_ranges as sr
from tasks import scratch_records as rec
from tasks.cache import sample_ids
from tasks.filters.dedup import DedupConfig, cluster_duplicates, later_copies, unit_rows
from tasks.filters.quality import LinearProbe, QualityConfig, clip_scores
from tasks.score import CachedShard, load_features

REASONS = ("quality:clip_score", "quality:probe", "dedup:exact", "dedup:semantic")  # a removal's code indexes this
REMOVED = np.dtype([("pos", "<i8"), ("code", "<i4")])
# ``hashed`` False: the row's entry has no content hashes (``hash`` is then meaningless)
CANDIDATE = np.dtype([("cluster", "<i4"), ("sim", "<f4"), ("pos", "<i8"), ("hash", "<i8"), ("hashed", "?")])
SAMPLE_ROWS = 65_536  # vectors the k-means is fitted on, whatever the pool's size


@dataclass(frozen=True)
class VectorFilters:
    """The vector filters of a run. ``clip``: the (image, text) column slices when the threshold is on."""

    min_clip_score: float | None = None
    clip: tuple[slice, slice] | None = None
    probes: tuple[LinearProbe, ...] = ()
    probe_columns: slice = field(default_factory=lambda: slice(None))
    dedup: DedupConfig = field(default_factory=DedupConfig)
    dedup_columns: slice = field(default_factory=lambda: slice(None))

    @property
    def active(self) -> bool:
        return self.min_clip_score is not None or bool(self.probes) or self.dedup.enabled


def vector_filters(quality: QualityConfig, dedup: DedupConfig, parts: dict[str, slice], embed_dim: int,
                   storage: StorageConfig | None = None) -> VectorFilters:
    """The run's vector filters for a backbone whose vectors have ``parts`` (``estimator.features.feature_parts``);
    ``ValueError`` for a CLIP-score threshold on a backbone without both towers, or a probe of another width."""
    clip = None
    if quality.min_clip_score is not None:
        if not {"image", "text"} <= set(parts):
            raise ValueError(f"filters.quality.min_clip_score needs image and text halves in the vector (a CLIP "
                             f"kind with modality image+text); this backbone's vectors hold {sorted(parts)}")
        clip = (parts["image"], parts["text"])
    image = parts.get("image", parts.get("fused", slice(0, embed_dim)))
    width = len(range(*image.indices(embed_dim)))
    probes = tuple(LinearProbe.load(spec, width, storage) for spec in quality.probes)
    return VectorFilters(min_clip_score=quality.min_clip_score, clip=clip, probes=probes, probe_columns=image,
                         dedup=dedup, dedup_columns=image)


def read_rows(pool: list[CachedShard], positions: np.ndarray, columns: slice) -> np.ndarray:
    """The ``columns`` of pool ``positions``' vectors (in their order), reading only the row groups holding them."""
    shard_of, row_of = positions >> np.int64(32), positions & np.int64(0xFFFFFFFF)
    out: np.ndarray | None = None
    for s in np.unique(shard_of):
        at = np.flatnonzero(shard_of == s)
        rows, back = np.unique(row_of[at], return_inverse=True)
        x = pool[int(s)].entry.read_vectors(rows)[:, columns]
        out = np.empty((len(positions), x.shape[1]), np.float32) if out is None else out
        out[at] = x[back]
    return out if out is not None else np.zeros((0, 0), np.float32)


def clusters_for(pool_rows: int, config: DedupConfig) -> int:
    return max(1, min(config.clusters or round((pool_rows / 4) ** 0.5), pool_rows, SAMPLE_ROWS))


def fit_centroids(unit: dict, *, pool: list[CachedShard], filters: VectorFilters) -> dict:
    """Pass 1: spherical k-means on a seeded sample of the pool's dedup columns."""
    x = unit_rows(load_features(pool, max_rows=SAMPLE_ROWS, seed=filters.dedup.seed)[:, filters.dedup_columns])
    k = min(unit["clusters"], len(x))
    kmeans = faiss.Kmeans(x.shape[1], k, niter=20, seed=filters.dedup.seed, spherical=True, verbose=False)
    kmeans.train(x)
    return {"centroids": kmeans.centroids.astype(np.float32).tobytes(), "k": k, "dim": x.shape[1]}


def _counts(pool: list[CachedShard], removed: np.ndarray) -> dict[str, dict[str, int]]:
    """Removals by source and reason."""
    out: dict[str, Counter] = {}
    for shard, code in zip((removed["pos"] >> np.int64(32)).tolist(), removed["code"].tolist(), strict=True):
        out.setdefault(pool[shard].source, Counter())[REASONS[code]] += 1
    return {source: dict(c) for source, c in out.items()}


def filter_file(unit: dict, *, pool: list[CachedShard], filters: VectorFilters, scratch: str,
                storage: StorageConfig | None, centroids: np.ndarray | None) -> dict:
    """Pass 2: one manifest file's threshold and probe removals, and its dedup candidates by cluster."""
    removed, candidates = [np.zeros(0, REMOVED)], [np.zeros(0, CANDIDATE)]
    index, unhashed, units = None, 0, []
    if centroids is not None:
        index = faiss.IndexFlatIP(centroids.shape[1])
        index.add(centroids)
    for s in range(unit["first"], unit["stop"]):
        x = pool[s].entry.read_vectors() if pool[s].counts is None or pool[s].counts.rows else None
        if x is None or not len(x):
            continue
        pos, code = sr.pool_positions(s, len(x)), np.full(len(x), -1, np.int32)
        if filters.clip is not None:
            code[clip_scores(x, *filters.clip) < filters.min_clip_score] = 0
        for probe in filters.probes:
            code[(code < 0) & probe.removes(x[:, filters.probe_columns])] = 1
        gone = code >= 0
        part = np.empty(int(gone.sum()), REMOVED)
        part["pos"], part["code"] = pos[gone], code[gone]
        removed.append(part)
        if index is not None and (~gone).any():
            kept = unit_rows(x[~gone][:, filters.dedup_columns])
            sim, label = index.search(kept, 1)
            units.append(kept.astype(np.float16))  # in [-1, 1]: float16 keeps ~3 digits, never overflows
            part = np.zeros(int((~gone).sum()), CANDIDATE)
            part["cluster"], part["sim"], part["pos"] = label[:, 0], sim[:, 0], pos[~gone]
            hashes = pool[s].entry.read_hashes()
            if hashes is None:
                unhashed += len(part)
            else:
                part["hash"], part["hashed"] = hashes[~gone], True
            candidates.append(part)
    name = f"part-{unit['part']:05d}"
    out = np.concatenate(removed)
    rec.write(join(scratch, "filtered", name + ".removed"), out, storage)
    if index is not None:
        cand = np.concatenate(candidates)
        order = np.argsort(cand["cluster"], kind="stable")
        cand = cand[order]
        starts = np.searchsorted(cand["cluster"], np.arange(len(centroids) + 1)).astype(rec.OFFSETS)
        rec.write(join(scratch, "filtered", name + ".candidates"), cand, storage)
        width = centroids.shape[1]
        rec.write(join(scratch, "filtered", name + ".vectors"),
                  np.concatenate([np.zeros((0, width), np.float16), *units])[order], storage)
        rec.write(join(scratch, "filtered", name + ".clusters"), starts, storage)
    return {"part": unit["part"], "removed": _counts(pool, out), "unhashed": unhashed}


def dedup_clusters(unit: dict, *, pool: list[CachedShard], filters: VectorFilters, scratch: str,
                   storage: StorageConfig | None, files: int, shards_per_file: int) -> dict:
    """Pass 3: exact copies, then near-duplicates, within clusters [low, high); removals in pool order with
    per-file offsets."""
    low, high, slices, units = unit["low"], unit["high"], [], []
    row = np.dtype((np.float16, (unit["width"],)))
    fs, root = filesystem(join(scratch, "filtered"), storage)
    for q in range(files):
        base = f"{root}/part-{q:05d}"
        start, stop = rec.read_at(fs, base + ".clusters", rec.OFFSETS, low, high + 1)[[0, -1]]
        slices.append(rec.read_at(fs, base + ".candidates", CANDIDATE, int(start), int(stop)))
        units.append(rec.read_at(fs, base + ".vectors", row, int(start), int(stop)).reshape(-1, unit["width"]))
    cand, vectors = np.concatenate(slices), np.concatenate(units)
    exact, semantic = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    order = np.lexsort((cand["pos"], -cand["sim"], cand["cluster"]))  # by cluster, nearest the centre first, by pos
    for at in np.split(order, np.flatnonzero(np.diff(cand["cluster"][order])) + 1):
        members = cand[at]
        # Identical bytes embed to the same vector (up to the float noise of the batch each ran in), so the copies of
        # an image share their nearest centroid and meet here: the first in the walk order stays. (Where the dedup
        # columns hold text too, a copy with another caption may lie in another cluster; it is then no copy.)
        copy = np.zeros(len(members), bool)
        copy[members["hashed"]] = later_copies(members["hash"][members["hashed"]])
        exact.append(members["pos"][copy])
        rest = members[~copy]
        if len(rest) < 2:
            continue
        x = unit_rows(vectors[at[~copy]])
        semantic.append(rest["pos"][cluster_duplicates(x, filters.dedup.threshold) >= 0])
    exact_pos, semantic_pos = np.concatenate(exact), np.concatenate(semantic)
    out = np.empty(len(exact_pos) + len(semantic_pos), REMOVED)
    out["pos"] = np.concatenate([exact_pos, semantic_pos])
    out["code"] = np.repeat([REASONS.index("dedup:exact"), REASONS.index("dedup:semantic")],
                            [len(exact_pos), len(semantic_pos)])
    out = out[np.argsort(out["pos"], kind="stable")]
    name = join(scratch, "dedup", f"group-{unit['group']:05d}")
    rec.write(name + ".removed", out, storage)
    rec.write(name + ".offsets", rec.file_offsets(out["pos"], files, shards_per_file), storage)
    return {"group": unit["group"], "removed": _counts(pool, out)}


def cluster_groups(k: int, groups: int) -> list[dict]:
    """Contiguous cluster ranges, one per dedup task."""
    edges = np.linspace(0, k, min(groups, k) + 1).round().astype(int)
    return [{"group": g, "low": int(a), "high": int(b)} for g, (a, b) in enumerate(zip(edges, edges[1:], strict=False))
            if b > a]


def file_removed(part: int, *, scratch: str, storage: StorageConfig | None, groups: int) -> np.ndarray:
    """One manifest file's removals, in pool order: its own (thresholds, probes) and its slice of every dedup
    group's."""
    parts = [rec.read(join(scratch, "filtered", f"part-{part:05d}.removed"), REMOVED, storage)]
    fs, root = filesystem(join(scratch, "dedup"), storage)
    for g in range(groups):
        base = f"{root}/group-{g:05d}"
        start, end = rec.read_at(fs, base + ".offsets", rec.OFFSETS, part, part + 2)
        parts.append(rec.read_at(fs, base + ".removed", REMOVED, int(start), int(end)))
    out = np.concatenate(parts)
    return out[np.argsort(out["pos"], kind="stable")]


def removed_positions(files: int, scratch: str, storage: StorageConfig | None, groups: int) -> np.ndarray:
    """Every removed pool position (what the pick pass skips: 8 bytes per removal, the pass's only pool-wide set)."""
    return np.concatenate([file_removed(q, scratch=scratch, storage=storage, groups=groups)["pos"]
                           for q in range(files)])


def merge_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """The passes' removal counts added up, by source and reason."""
    total: dict[str, Counter] = {}
    for row in rows:
        for source, counts in row["removed"].items():
            total.setdefault(source, Counter()).update(counts)
    return {source: dict(c) for source, c in sorted(total.items())}


@dataclass(frozen=True)
class Filtered:
    """What the passes removed: counts by source and reason, the dedup groups whose files hold the rest, and the
    dedup candidates without a content hash (from entries cached before hashes were kept: semantic dedup only)."""

    counts: dict[str, dict[str, int]]
    groups: int
    unhashed: int = 0

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def run_filter_passes(run_pass: Callable[..., list[dict]], *, pool: list[CachedShard], filters: VectorFilters,
                      scratch: str, storage: StorageConfig | None, files: list[dict], shards_per_file: int,
                      options: object, removed_uri: str) -> Filtered:
    """The three passes on the engine's ``run_pass`` (so on its executor and policy), before the score pass."""
    centroids = None
    if filters.dedup.enabled:
        k = clusters_for(sum(s.counts.rows if s.counts else s.entry.rows() for s in pool), filters.dedup)
        [fit] = run_pass("dedup centroids", partial(fit_centroids, pool=pool, filters=filters), [{"clusters": k}],
                         options, name=lambda _: "centroids", timing="filter")
        centroids = np.frombuffer(fit["centroids"], np.float32).reshape(fit["k"], fit["dim"])
    work = partial(filter_file, pool=pool, filters=filters, scratch=scratch, storage=storage, centroids=centroids)
    rows = run_pass("filter", work, files, options, name=lambda u: f"part-{u['part']:05d}", timing="filter")
    unhashed = sum(row["unhashed"] for row in rows)
    groups = []
    if centroids is not None:
        groups = [{**g, "width": centroids.shape[1]} for g in cluster_groups(len(centroids), len(files))]
        dedup = partial(dedup_clusters, pool=pool, filters=filters, scratch=scratch, storage=storage,
                        files=len(files), shards_per_file=shards_per_file)
        rows += run_pass("dedup", dedup, groups, options, name=lambda u: f"clusters {u['low']}-{u['high']}",
                         timing="filter")
    removals = partial(write_removals, pool=pool, scratch=scratch, storage=storage, groups=len(groups), uri=removed_uri)
    run_pass("filter removals", removals, files, options, name=lambda u: f"part-{u['part']:05d}", timing="filter")
    return Filtered(merge_counts(rows), len(groups), unhashed)


def write_removals(unit: dict, *, pool: list[CachedShard], scratch: str, storage: StorageConfig | None, groups: int,
                   uri: str) -> dict:
    """Pass 4: publish one manifest file's removals as errors-contract rows (``{uri}/part-NNNNN.parquet``)."""
    removed = file_removed(unit["part"], scratch=scratch, storage=storage, groups=groups)
    shard_of, parts = removed["pos"] >> np.int64(32), [ERRORS.empty_table()]
    for s in np.unique(shard_of).tolist():
        shard = pool[s]
        ids = sample_ids(shard.source, shard.shard, shard.entry.read(["key"])["key"])
        parts.append(removal_table(shard.shard_uri, ids, removed[shard_of == s]))
    with publish(join(uri, f"part-{unit['part']:05d}.parquet"), storage) as f:
        pq.write_table(pa.concat_tables(parts), f)
    return {"part": unit["part"], "rows": len(removed)}


def removal_table(shard_uri: str, sample_ids: pa.Array | pa.ChunkedArray, removed: np.ndarray) -> pa.Table:
    """Errors-contract rows of one shard's ``removed`` records (``sample_ids``: the shard's, in entry order)."""
    rows = pa.array((removed["pos"] & np.int64(0xFFFFFFFF)).astype(np.int64))
    reasons = [REASONS[c] for c in removed["code"].tolist()]
    return pa.table({"sample_id": sample_ids.take(rows), "shard_uri": pa.array([shard_uri] * len(rows), pa.string()),
                     "stage": pa.array([r.split(":")[0] for r in reasons], pa.string()),
                     "reason": pa.array(reasons, pa.string()),
                     "detail": pa.array([""] * len(rows), pa.string())}).cast(ERRORS)
