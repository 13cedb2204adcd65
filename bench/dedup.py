"""Pool-wide dedup in the selection engine (``tasks.filter_passes``): what it adds to a whole engine job, and how
much memory its tasks and the driver take, on a cache with planted duplicates; the result is checked against them.

The cache is synthetic (written once per size under data/bench/, float16, 512-d, 10k-row shards): random vectors,
of which ``--near`` of the rows are noisy copies of other rows (re-encoded images: cosine about
1 / sqrt(1 + noise²) to their original) and ``--exact`` of the rows byte-for-byte copies (the same vector and content
hash), each copy of a different original. One run on a local Ray: a warm-up job, then the engine job without
filters and with dedup (threshold 0.95, clusters about sqrt(pool / 4)), K = 10 %. Driver memory is its RSS sampled
every 20 ms above its level before; a task's is its worker's peak RSS (VmHWM, reset as the task starts), per pass.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

import tasks.distributed_select as ds
from bench.distributed_selection import _peak_rss
from core.contracts import ERRORS
from core.location import Location
from core.storage import exists, publish_bytes
from estimator.probe import ProximityEstimator
from flows.runtime import local_ray, ray_temp_dir
from tasks.cache import EmbeddingCache
from tasks.distributed_select import DistributedSelection, score_select_write
from tasks.filter_passes import VectorFilters, clusters_for
from tasks.filters.dedup import DedupConfig
from tasks.score import CachedShard

OUT = Path("bench/out")
DATA = Path("data/bench")
RUNS = DATA / "dedup-runs"
SOURCES = ("src0", "src1", "src2", "src3")
FILTER_PASSES = ("dedup centroids", "filter", "dedup", "filter removals")  # the passes whose tasks are reported


@dataclass(frozen=True)
class Planted:
    """The planted copies, by global row (shard * shard_size + row): each copy and its original."""

    near: np.ndarray  # [n, 2]: copy, original
    exact: np.ndarray


def plant(pool: int, near: float, exact: float, seed: int = 0) -> Planted:
    perm = np.random.default_rng(seed).permutation(pool)
    n, e = int(near * pool), int(exact * pool)
    copies, originals = perm[: n + e], perm[n + e : 2 * (n + e)]  # every copy has its own original
    return Planted(near=np.stack([copies[:n], originals[:n]], 1), exact=np.stack([copies[n:], originals[n:]], 1))


def planted_cache(pool: int, args: argparse.Namespace, planted: Planted) -> tuple[EmbeddingCache, list[CachedShard]]:
    """The cache of ``pool`` vectors with ``planted`` copies (written once; reused while its _DONE marker is there)."""
    root = DATA / f"dedup-cache-{pool}-{args.dim}-{args.shard_size}-{args.near}-{args.exact}-{args.noise}"
    cache = EmbeddingCache(root=Location(str(root)), fingerprint="synthetic")
    shards = [CachedShard(source=SOURCES[i % len(SOURCES)], shard_uri=f"synthetic://{i:06d}", shard=f"{i:06d}",
                          entry=cache.at(f"{cache.root}/{cache.fingerprint}/{i:06d}"))
              for i in range(-(-pool // args.shard_size))]
    done = f"{cache.root}/_DONE"
    if exists(done):
        return cache, shards
    rng = np.random.default_rng(1)
    x = rng.standard_normal((pool, args.dim), dtype=np.float32)
    hashes = rng.integers(-(2**63), 2**63 - 1, pool, dtype=np.int64)
    copy, original = planted.near.T
    x[copy] = x[original] + args.noise * rng.standard_normal((len(copy), args.dim), dtype=np.float32)
    copy, original = planted.exact.T
    x[copy], hashes[copy] = x[original], hashes[original]
    x = x.astype(np.float16)
    for i, shard in enumerate(shards):
        rows = slice(i * args.shard_size, min((i + 1) * args.shard_size, pool))
        n = rows.stop - rows.start
        table = pa.table({"key": [f"{j:06d}" for j in range(n)], "content_hash": hashes[rows],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[rows].reshape(-1)), args.dim)})
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float16")
    publish_bytes(done, b"")
    return cache, shards


def _vm(field: str) -> int:
    """This process's ``field`` of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


@dataclass(frozen=True)
class _Measured:
    """A pass's work, reporting its worker's peak RSS over the task (VmHWM, reset first) in its summary row."""

    work: Callable[[dict], dict]

    def __call__(self, unit: dict) -> dict:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        start = _vm("VmRSS")
        return {**self.work(unit), "bench_rss_start": start, "bench_rss_peak": _vm("VmHWM")}


def _measuring(passes: dict[str, dict], run_pass: Callable[..., list[dict]]) -> Callable[..., list[dict]]:
    """``run_pass`` recording each pass's wall time and its tasks' peak RSS in ``passes``."""

    def measured(step: str, work: Callable[[dict], dict], units: list[dict], options: DistributedSelection,
                 **kwargs: object) -> list[dict]:
        start = time.perf_counter()
        rows = run_pass(step, _Measured(work), units, options, **kwargs)
        passes[step] = {"s": round(time.perf_counter() - start, 1), "tasks": len(rows),
                        "peak_mb": round(max(r["bench_rss_peak"] for r in rows) / 1e6),
                        "above_start_mb": round(max(r["bench_rss_peak"] - r["bench_rss_start"] for r in rows) / 1e6)}
        return rows

    return measured


def check(removed: pa.Table, planted: Planted, shard_size: int) -> dict[str, int]:
    """The removals against the planted copies: how many of each kind went, and how many removals were not a
    copy's pair (a distinct sample, or both of a pair)."""
    parts = pc.split_pattern(removed["sample_id"], "/").to_pylist()
    rows = np.array([int(shard) * shard_size + int(key) for _, shard, key in parts], np.int64)
    reasons = np.array(removed["reason"].to_pylist())
    out: dict[str, int] = {}
    for kind in ("near", "exact"):
        pairs = getattr(planted, kind)
        hit = np.isin(pairs, rows)  # [n, 2]: which of each pair went
        out[f"{kind}_planted"] = len(pairs)
        out[f"{kind}_removed"] = int(hit.any(axis=1).sum())
        out[f"{kind}_both_removed"] = int(hit.all(axis=1).sum())
    paired = np.isin(rows, np.concatenate([planted.near.ravel(), planted.exact.ravel()]))
    out["distinct_removed"] = int((~paired).sum())
    exact_rows = planted.exact.ravel()
    out["exact_as_exact"] = int(((reasons == "dedup:exact") & np.isin(rows, exact_rows)).sum())
    for reason in ("dedup:exact", "dedup:semantic"):
        out[reason] = int((reasons == reason).sum())
    return out


def bench_pool(pool: int, args: argparse.Namespace) -> dict:
    planted = plant(pool, args.near, args.exact)
    cache, shards = planted_cache(pool, args, planted)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        scorer = ProximityEstimator(embed_dim=args.dim)
    k = max(1, pool // 10)
    options = DistributedSelection(shards_per_file=args.shards_per_file, workers=args.workers, cpus=args.cpus)
    dedup = VectorFilters(dedup=DedupConfig(enabled=True, threshold=args.threshold))

    def job(filters: VectorFilters | None) -> dict:
        uri = str(RUNS / f"{pool}-{time.time_ns()}" / "manifest.parquet")
        return score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=uri, sidecar={}, k=k,
                                  fraction=None, options=options, filters=filters)

    job(None)  # warm-up: Ray's workers start, the page cache fills
    plain_s, plain_mb, _ = _peak_rss(lambda: job(None))
    passes: dict[str, dict] = {}
    run_pass, ds.run_pass = ds.run_pass, _measuring(passes, ds.run_pass)  # the engine looks it up per pass
    try:
        dedup_s, dedup_mb, sidecar = _peak_rss(lambda: job(dedup))
    finally:
        ds.run_pass = run_pass
    found = check(pq.read_table(sidecar["removed_uri"]), planted, args.shard_size)
    if found["distinct_removed"] or found["near_both_removed"] or found["exact_both_removed"] or (
            found["exact_as_exact"] != found["exact_planted"]):
        raise RuntimeError(f"dedup removed what it should not have, or missed an exact copy: {found}")
    row = {"pool": pool, "clusters": clusters_for(pool, dedup.dedup), "files": len(sidecar["files"]),
           "plain_s": round(plain_s, 1), "dedup_s": round(dedup_s, 1), "dedup/plain": round(dedup_s / plain_s, 2),
           "driver_peak_mb_plain": round(plain_mb, 1), "driver_peak_mb_dedup": round(dedup_mb, 1),
           **found,
           **{f"{step} {key}": value for step, p in passes.items() if step in FILTER_PASSES
              for key, value in p.items()}}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench dedup")
    ap.add_argument("--pools", default="100000,1000000", help="comma-separated pool sizes")
    ap.add_argument("--dim", type=int, default=512, help="vector width (ViT-B-32 image tower: 512)")
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--near", type=float, default=0.10, help="share of rows that are noisy copies of another")
    ap.add_argument("--exact", type=float, default=0.02, help="share of rows that are exact copies of another")
    ap.add_argument("--noise", type=float, default=0.1, help="a noisy copy's noise, per unit of the vector's scale")
    ap.add_argument("--threshold", type=float, default=0.95, help="dedup's cosine threshold")
    ap.add_argument("--shards-per-file", type=int, default=8, help="pool shards per manifest file / task")
    ap.add_argument("--workers", type=int, default=2, help="tasks at once")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per task")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = ap.parse_args(argv)
    with local_ray(temp_dir=ray_temp_dir(), num_cpus=args.num_cpus):
        rows = [bench_pool(int(p), args) for p in args.pools.split(",")]
    print("\n" + pd.DataFrame(rows).T.to_string())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dedup.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
