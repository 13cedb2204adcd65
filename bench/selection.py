"""Scoring + selection from the embedding cache vs reading the same cache files alone, and the peak memory of the
selection step as the pool and K grow.

The cache is synthetic: ``EmbeddingCache.write`` of random float16 vectors in shards of ``--shard-size`` rows over
4 sources (written once per size under data/bench/, then hot in the page cache: this measures CPU, not disk).
The scorer is an untrained linear ``ProximityEstimator`` (the flow's default head; its weights do not change the
cost). Selection is the flow's own ``select`` task body (rank every row, keep the top K, ranks for the manifest).
Peak memory is tracemalloc's (it tracks numpy; Arrow and torch buffers are not counted), measured in a second
pass so that tracing does not slow the timed one.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from core.contracts import ERRORS
from core.storage import exists, publish_bytes
from estimator.probe import ProximityEstimator
from tasks import curation
from tasks.cache import EmbeddingCache, vectors
from tasks.score import CachedShard, PoolScores, score_pool

OUT = Path("bench/out")
DATA = Path("data/bench")
SOURCES = ("src0", "src1", "src2", "src3")
choose = curation.select  # the plain step, without a Prefect run around it


def synthetic_cache(pool: int, dim: int, shard_size: int) -> tuple[EmbeddingCache, list[CachedShard]]:
    """A cache of ``pool`` random vectors (written once; reused while the _DONE marker is there)."""
    cache = EmbeddingCache(root=str(DATA / f"select-cache-{pool}-{dim}-{shard_size}"), fingerprint="synthetic")
    shards = [CachedShard(source=SOURCES[i % len(SOURCES)], shard_uri=f"synthetic://{i:06d}", shard=f"{i:06d}",
                          entry=f"{cache.root}/{cache.fingerprint}/{i:06d}")
              for i in range(-(-pool // shard_size))]
    done = f"{cache.root}/_DONE-v3"  # v2: entries hold keys, not sample ids; v3: row groups of 1,024 rows
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


def _read_vectors(cache: EmbeddingCache, shards: list[CachedShard]) -> int:
    """One streaming pass: each entry's vectors as float32, nothing kept (the floor of any pass)."""
    return sum(len(vectors(cache.read(s.entry, columns=["embedding"]))) for s in shards)


def _read_ids(cache: EmbeddingCache, shards: list[CachedShard]) -> int:
    """What score_pool adds besides the vectors: the sample ids as Python strings."""
    return sum(len(cache.read(s.entry, columns=["sample_id"])["sample_id"].to_pylist()) for s in shards)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _traced_peak(fn: Callable[[], object]) -> float:
    """Peak numpy/Python bytes allocated while ``fn`` runs, above what was allocated before, in MB."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        tracemalloc.stop()


def bench_pool(pool: int, ks: list[int], args: argparse.Namespace) -> tuple[dict, list[dict]]:
    t0 = time.perf_counter()
    cache, shards = synthetic_cache(pool, args.dim, args.shard_size)
    print(f"pool {pool}: cache ready in {time.perf_counter() - t0:.1f}s ({len(shards)} shards)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        scorer = ProximityEstimator(embed_dim=args.dim)
    _read_vectors(cache, shards)  # warm the page cache
    read_s, _ = _timed(lambda: _read_vectors(cache, shards))
    ids_s, _ = _timed(lambda: _read_ids(cache, shards))
    score_s, scores = _timed(lambda: score_pool(cache, shards, scorer))
    assert isinstance(scores, PoolScores) and len(scores.scores) == pool
    k10 = max(1, pool // 10)
    select_s, _ = _timed(lambda: choose(scores, k=k10, fraction=None, per_source_cap=None))
    score_mb = _traced_peak(lambda: score_pool(cache, shards, scorer))
    row = {"pool": pool, "read_vectors_per_s": round(pool / read_s), "read_ids_pylist_s": round(ids_s, 2),
           "score_pool_s": round(score_s, 2), "select_s(k=10%)": round(select_s, 2),
           "score+select_per_s": round(pool / (score_s + select_s)),
           "score+select/read": round(read_s / (score_s + select_s), 2),
           "score_pool_peak_mb": round(score_mb, 1)}
    sel_rows = []
    for k in [k for k in ks if k <= pool]:
        cap = {SOURCES[0]: k // 8}  # binds: src0 holds ~1/4 of the top rows
        for caps in (None, cap) if k <= pool // 2 else (None,):
            step = partial(choose, scores, k=k, fraction=None, per_source_cap=caps)
            secs, _ = _timed(step)
            mb = _traced_peak(step)
            sel_rows.append({"pool": pool, "k": k, "caps": bool(caps), "select_s": round(secs, 3),
                             "peak_mb": round(mb, 1), "bytes_per_pool_sample": round(mb * 1e6 / pool, 1)})
    print(json.dumps(row))
    return row, sel_rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench select")
    ap.add_argument("--pools", default="100000,1000000", help="comma-separated pool sizes")
    ap.add_argument("--ks", default="1000,10000,100000", help="comma-separated K for the memory table")
    ap.add_argument("--dim", type=int, default=512, help="vector width (ViT-B-32 image tower: 512)")
    ap.add_argument("--shard-size", type=int, default=10_000)
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    results = [bench_pool(int(p), ks, args) for p in args.pools.split(",")]
    rows = [r for r, _ in results]
    sel = [s for _, ss in results for s in ss]
    print("\n" + pd.DataFrame(rows).to_string(index=False) + "\n\n" + pd.DataFrame(sel).to_string(index=False))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "selection.json").write_text(json.dumps({"args": vars(args), "rows": rows, "select": sel}, indent=1))
    return 0
