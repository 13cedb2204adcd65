"""The report and the estimator's fit as the pool grows: time and peak memory should not grow with it.

Data (written once per size under data/bench/, then reused): ``bench.selection``'s synthetic cache (random float16
vectors, shards of ``--shard-size`` rows over 4 sources, row groups of 1,024 rows), a manifest for it as the
one-process path writes one (a single Parquet file, one row group per shard; scores drawn per source, ranks by
score, K = 10 %) and a robot set of 2 entries × 2,000 vectors shifted by ``--robot-shift`` so that the estimator
separates them as it would real robot data (and stops early).

Steps, each run ``--repeat`` times in a fresh process, the sizes in turn, the fastest run kept (the first also
fills the page cache):
``scan`` (the report's one pass over the manifest), ``sample`` (``load_sets``: the scan plus the sampled rows'
reads), ``report`` (``build_report``, figures and t-SNE included; no example thumbnails: the shards are synthetic)
and ``fit`` (``tasks.curation.fit``: footers, the pool sample's reads and the estimator's training, with
``--train-pool-samples``). Peak memory is the growth of the process's resident set over its size before the step,
sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bench.distributed_selection import _peak_rss
from bench.selection import DATA, SOURCES, synthetic_cache
from core.contracts import ERRORS
from core.location import Location
from core.manifest import write_manifest
from core.storage import exists, publish_bytes
from tasks.cache import EmbeddingCache, sample_ids
from tasks.score import CachedShard

OUT = Path("bench/out")
STEPS = ("scan", "sample", "report", "fit")
ROBOT_ROWS = (2000, 2000)


def robot_set(dim: int, shift: float) -> list[CachedShard]:
    """Robot vectors: standard normal + ``shift`` on every column (written once)."""
    cache = EmbeddingCache(root=Location(str(DATA / f"flat-robot-{dim}-{shift}")), fingerprint="synthetic")
    shards = [CachedShard(source="robot", shard_uri=f"synthetic-robot://{i}", shard=str(i),
                          entry=cache.at(f"{cache.root}/synthetic/robot-{i:03d}")) for i in range(len(ROBOT_ROWS))]
    if not exists(f"{cache.root}/_DONE"):
        rng = np.random.default_rng(1)
        for shard, n in zip(shards, ROBOT_ROWS, strict=True):
            x = rng.standard_normal((n, dim), dtype=np.float32) + np.float32(shift)
            table = pa.table({"key": [str(j) for j in range(n)],
                              "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)})
            cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float16")
        publish_bytes(f"{cache.root}/_DONE", b"")
    return shards


def synthetic_run(pool: int, args: argparse.Namespace) -> str:
    """The manifest (and sidecar) of a run over the synthetic cache of ``pool`` samples; returns its URI."""
    cache, shards = synthetic_cache(pool, args.dim, args.shard_size)
    robot = robot_set(args.dim, args.robot_shift)
    uri = str(DATA / f"flat-run-{pool}-{args.dim}-{args.shard_size}" / "manifest.parquet")
    if exists(uri.replace("manifest.parquet", "_DONE")):
        return uri
    rng = np.random.default_rng(0)
    sizes = [min(args.shard_size, pool - i * args.shard_size) for i in range(len(shards))]
    offset = {s: 0.3 * i for i, s in enumerate(SOURCES)}
    scores = np.concatenate([rng.standard_normal(n, dtype=np.float32) + np.float32(offset[s.source])
                             for s, n in zip(shards, sizes, strict=True)])
    rank = np.empty(pool, np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(pool)
    k = pool // 10

    def parts():
        start = 0
        for shard, n in zip(shards, sizes, strict=True):
            keys = pa.array([f"{j:06d}" for j in range(n)], pa.string())
            stop = start + n
            yield pa.table({"sample_id": sample_ids(shard.source, shard.shard, keys),
                            "source": pa.array([shard.source] * n), "shard_uri": pa.array([shard.shard_uri] * n),
                            "key": keys, "score": scores[start:stop], "rank": rank[start:stop],
                            "selected": rank[start:stop] < k})
            start = stop

    sidecar = {"run_id": f"flat-{pool}", "backbone": "synthetic", "backbone_fingerprint": cache.fingerprint,
               "cache_uri": cache.root.uri, "embed_dim": args.dim, "k": k, "quarantined": 0, "pool": [],
               "robot": [{"name": "robot"}],
               "cache_entries": {"pool": {s.shard_uri: s.entry.uri for s in shards},
                                 "robot": {"robot": [s.entry.uri for s in robot]}}}
    write_manifest(uri, parts(), sidecar)
    publish_bytes(uri.replace("manifest.parquet", "_DONE"), b"")
    return uri


def run_step(step: str, pool: int, args: argparse.Namespace) -> dict:
    """One step on the pool's run, in this process: its seconds and peak RSS growth."""
    from tasks.report import build_report
    from tasks.report.sample import load_sets
    from tasks.report.scan import scan_manifest

    uri = synthetic_run(pool, args)
    steps: dict[str, Callable[[], object]] = {
        "scan": partial(scan_manifest, uri, per_set=args.per_set, seed=0),
        "sample": partial(load_sets, uri, per_set=args.per_set, seed=0),
        "report": partial(build_report, uri, out_uri=uri.replace("manifest.parquet", "report"), per_set=args.per_set),
    }
    seconds, peak_mb, _ = _peak_rss(steps[step] if step in steps else _fit(pool, args))
    return {"step": step, "pool": pool, "seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1)}


def _fit(pool: int, args: argparse.Namespace) -> Callable[[], object]:
    from estimator.backbones.fingerprint import BackboneInfo
    from estimator.scorer import ScorerConfig
    from tasks.curation import Plan, fit

    cache, shards = synthetic_cache(pool, args.dim, args.shard_size)
    plan = Plan(backbone=BackboneInfo(fingerprint=cache.fingerprint, embed_dim=args.dim,
                                      parts={"kind": "open_clip", "modality": "image+text"}),
                cache=cache, pool=shards, robot=robot_set(args.dim, args.robot_shift), todo=[],
                listing_errors=ERRORS.empty_table())
    return partial(fit, plan, ScorerConfig(), train_pool_samples=args.train_pool_samples)


def _child(step: str, pool: int, args: argparse.Namespace) -> dict:
    """The step in a fresh process (its output's last line is the row)."""
    cmd = [sys.executable, "-m", "bench", "flat", "--child", step, "--pools", str(pool), "--dim", str(args.dim),
           "--shard-size", str(args.shard_size), "--per-set", str(args.per_set),
           "--train-pool-samples", str(args.train_pool_samples), "--robot-shift", str(args.robot_shift)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench flat")
    ap.add_argument("--pools", default="100000,1000000,10000000", help="comma-separated pool sizes")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    ap.add_argument("--dim", type=int, default=512, help="vector width (ViT-B-32 image tower: 512)")
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--per-set", type=int, default=500, help="the report's samples per set (its default)")
    ap.add_argument("--train-pool-samples", type=int, default=100_000, help="the fit's pool sample (the default)")
    ap.add_argument("--robot-shift", type=float, default=0.3, help="robot vectors' mean on every column")
    ap.add_argument("--repeat", type=int, default=3, help="runs per step and size; the fastest is kept")
    ap.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    pools = [int(p) for p in args.pools.split(",")]
    if args.child:
        print(json.dumps(run_step(args.child, pools[0], args)), flush=True)
        return 0
    for pool in pools:
        t0 = time.perf_counter()
        synthetic_run(pool, args)
        print(f"pool {pool}: data ready in {time.perf_counter() - t0:.0f}s", flush=True)
    rows = []
    for step in args.steps.split(","):
        runs: dict[int, list[dict]] = {pool: [] for pool in pools}
        for _ in range(args.repeat):  # sizes in turn, so that a change in the host's load hits them alike
            for pool in pools:
                runs[pool].append(_child(step, pool, args) | {"load_1min": round(os.getloadavg()[0], 1)})
                print(json.dumps(runs[pool][-1]), flush=True)
        rows += [min(r, key=lambda row: row["seconds"]) for r in runs.values()]
    df = pd.DataFrame(rows)
    table = df.pivot(index="step", columns="pool", values=["seconds", "peak_mb"])
    first, last = min(pools), max(pools)
    ratios = {f"{m}_{last}/{first}": (table[(m, last)] / table[(m, first)]).round(2) for m in ("seconds", "peak_mb")}
    print("\n" + df.to_string(index=False) + "\n\n" + pd.DataFrame(ratios).to_string())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "flat.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
