"""What each selection rule costs in the selection engine (``tasks.distributed_select``), and the synthetic cache the
selection benches share.

The cache is synthetic: ``EmbeddingCache.write`` of random float16 vectors in shards of ``--shard-size`` rows over
4 sources (written once per size under data/bench/, then hot in the page cache: this measures CPU, not disk).
The scorer is an untrained linear ``ProximityEstimator`` (the flow's default head; its weights do not change the
cost). Each row is one whole engine job (score, rank, pick, write the manifest) on a local Ray with ``--workers``
tasks at once, at K = 10 % of the pool: top-K, the importance draw (a second ranking), a binding per-source cap and
near-duplicate removal (both a pick pass that walks the chosen order until K are kept). The driver's memory, flat
in the pool whatever the rule, is ``bench.distributed_selection``'s measure.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from core.contracts import ERRORS
from core.location import Location
from core.storage import exists, publish_bytes
from estimator.probe import ProximityEstimator
from flows.runtime import local_ray, ray_temp_dir
from tasks.cache import EmbeddingCache
from tasks.distributed_select import DistributedSelection, score_select_write
from tasks.score import CachedShard
from tasks.select import SelectionConfig

OUT = Path("bench/out")
DATA = Path("data/bench")
RUNS = DATA / "selection-runs"
SOURCES = ("src0", "src1", "src2", "src3")


def synthetic_cache(pool: int, dim: int, shard_size: int) -> tuple[EmbeddingCache, list[CachedShard]]:
    """A cache of ``pool`` random vectors (written once; reused while the _DONE marker is there)."""
    root = Location(str(DATA / f"select-cache-{pool}-{dim}-{shard_size}"))
    cache = EmbeddingCache(root=root, fingerprint="synthetic")
    shards = [CachedShard(source=SOURCES[i % len(SOURCES)], shard_uri=f"synthetic://{i:06d}", shard=f"{i:06d}",
                          entry=cache.at(f"{cache.root}/{cache.fingerprint}/{i:06d}"))
              for i in range(-(-pool // shard_size))]
    done = f"{cache.root}/_DONE-v4"  # v2: keys, not sample ids; v3: row groups of 1,024 rows; v4: non-null values
    if exists(done):
        return cache, shards
    rng = np.random.default_rng(0)
    errors = ERRORS.empty_table()
    for i, shard in enumerate(shards):
        n = min(shard_size, pool - i * shard_size)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        ids = [f"{shard.source}/{i:06d}/{j:06d}" for j in range(n)]
        table = pa.table({"sample_id": ids, "source": [shard.source] * n, "key": [f"{j:06d}" for j in range(n)],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)})
        cache.write(shard.entry, shard.shard_uri, table, errors, "float16")
    publish_bytes(done, b"")
    return cache, shards


RULES = {  # row name: (selection, per-source caps as a share of K)
    "top_k": (SelectionConfig(), None),
    "importance": (SelectionConfig(mode="importance", seed=0), None),
    "top_k + cap": (SelectionConfig(), 1 / 8),  # binds: src0 holds ~1/4 of the top rows
    "top_k + dedup": (SelectionConfig(dedup_threshold=0.95), None),
}


def bench_pool(pool: int, args: argparse.Namespace) -> list[dict]:
    cache, shards = synthetic_cache(pool, args.dim, args.shard_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        scorer = ProximityEstimator(embed_dim=args.dim)
    k = max(1, pool // 10)
    options = DistributedSelection(shards_per_file=args.shards_per_file, workers=args.workers, cpus=args.cpus)
    rows = []
    for name, (selection, cap) in RULES.items():
        uri = str(RUNS / f"{pool}-{time.time_ns()}" / "manifest.parquet")
        caps = {SOURCES[0]: int(k * cap)} if cap else None
        start = time.perf_counter()
        sidecar = score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=uri, sidecar={}, k=k,
                                     fraction=None, selection=selection, per_source_cap=caps, options=options)
        secs = time.perf_counter() - start
        assert sidecar["selected"] == k
        rows.append({"pool": pool, "k": k, "rule": name, "seconds": round(secs, 1),
                     "samples_per_s": round(pool / secs),
                     "duplicates_skipped": sidecar["selection"]["duplicates_skipped"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def engine_parser(prog: str) -> argparse.ArgumentParser:
    """The options every engine bench shares: pool sizes, the synthetic cache's shape, the tasks and the local Ray."""
    ap = argparse.ArgumentParser(prog=f"python -m bench {prog}")
    ap.add_argument("--pools", default="100000,1000000", help="comma-separated pool sizes")
    ap.add_argument("--dim", type=int, default=512, help="vector width (ViT-B-32 image tower: 512)")
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--shards-per-file", type=int, default=8, help="pool shards per manifest file / task")
    ap.add_argument("--workers", type=int, default=2, help="tasks at once")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per task")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    return ap


def run_pools(args: argparse.Namespace, bench_pool: Callable[[int, argparse.Namespace], list[dict]], name: str,
              transpose: bool = False) -> int:
    """``bench_pool`` for each of ``args.pools`` on one local Ray; prints the table and writes ``OUT/name.json``."""
    with local_ray(temp_dir=ray_temp_dir(), num_cpus=args.num_cpus):
        rows = [r for p in args.pools.split(",") for r in bench_pool(int(p), args)]
    table = pd.DataFrame(rows)
    print("\n" + (table.T.to_string() if transpose else table.to_string(index=False)))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


def main(argv: list[str]) -> int:
    return run_pools(engine_parser("select").parse_args(argv), bench_pool, "selection")
