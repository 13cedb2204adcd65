"""Distributed scoring + selection (``tasks.distributed_select``) vs a raw parallel read of the same vectors, and
the driver's peak memory as the pool grows, on a local Ray cluster.

The cache is ``bench.selection``'s synthetic one (random float16 vectors, shards of ``--shard-size`` rows, written
once under data/bench/). The scorer is an untrained linear ``ProximityEstimator``. The raw read is the same task
layout doing nothing but read: one Ray task per group of entries (through the same executor pass), each reading its
vectors as float32 and counting them (``ray.data.read_parquet`` itself put every file in one read task here).
Driver memory is the driver process's resident set, sampled every 20 ms during the run, above its value before
(RSS counts Arrow and numpy alike).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from bench.selection import engine_parser, run_pools, synthetic_cache
from estimator.probe import ProximityEstimator
from tasks.cache import CacheEntry
from tasks.distributed_select import DistributedSelection, run_pass, score_select_write

RUNS = Path("data/bench/distributed-select-runs")


def _peak_rss(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(seconds, peak resident MB above the start, result) of ``fn`` in this process."""
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        done.set()
        sampler.join()
    return time.perf_counter() - t0, (peak - base) / 1e6, out


def _read_entries(row: dict) -> dict:
    return {"n": sum(len(e.read_vectors()) for e in row["entries"])}


def _raw_read(groups: list[list[CacheEntry]], options: DistributedSelection) -> int:
    """The same task layout as the scoring pass (one Ray task per group of entries, same CPUs and concurrency,
    through the same executor pass), each task only reading its entries' vectors as float32: the floor of any pass."""
    units = [{"group": i, "entries": g} for i, g in enumerate(groups)]
    rows = run_pass("raw read", _read_entries, units, options, name=lambda u: str(u["group"]))
    return int(sum(row["n"] for row in rows))


def bench_pool(pool: int, args: argparse.Namespace) -> dict:
    cache, shards = synthetic_cache(pool, args.dim, args.shard_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        scorer = ProximityEstimator(embed_dim=args.dim)
    k = max(1, pool // 10)
    options = DistributedSelection(shards_per_file=args.shards_per_file, workers=args.workers, cpus=args.cpus)
    entries = [s.entry for s in shards]
    groups = [entries[i : i + args.shards_per_file] for i in range(0, len(entries), args.shards_per_file)]
    _raw_read(groups, options)  # warm-up: Ray's workers start, the page cache fills
    read_s, read_mb, rows = _peak_rss(lambda: _raw_read(groups, options))
    assert rows == pool
    uri = str(RUNS / f"{pool}-{time.time_ns()}" / "manifest.parquet")
    dist_s, dist_mb, sidecar = _peak_rss(lambda: score_select_write(
        cache=cache, pool=shards, scorer=scorer, manifest_uri=uri, sidecar={}, k=k, fraction=None, options=options))
    assert sidecar["rows"] == pool and sidecar["selected"] == k
    row = {"pool": pool, "files": len(sidecar["files"]), "raw_read_s": round(read_s, 1),
           "distributed_s": round(dist_s, 1), "raw_read/distributed": round(read_s / dist_s, 2),
           "distributed_per_s": round(pool / dist_s),
           "driver_peak_mb_raw_read": round(read_mb, 1), "driver_peak_mb_distributed": round(dist_mb, 1)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str]) -> int:
    args = engine_parser("dselect").parse_args(argv)
    return run_pools(args, lambda p, a: [bench_pool(p, a)], "distributed_selection")
