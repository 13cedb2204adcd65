"""Capacity model: hours per stage, the stage that limits, S3 requests and bytes, and driver memory to curate N
samples with backbone B on G GPUs and C CPU cores. Every input is an argument whose default is either a figure
**measured** here (bench/README.md names the bench and run) or a **labelled assumption** where nothing could be
measured here (GPU throughput: no GPU was lent to this work; S3 latency: no real S3 here). ``--help`` says which.

    preflight hours = S * r_pre * latency / driver_threads   (the driver's per-shard requests, driver_threads at once)
    embed hours     = N / min(G * gpu_rate[B], C_decode * decode_rate)   (the slower of the two limits)
    select hours    = N * select_cpu_us / C_select                        (three distributed passes, CPU)
    dedup hours     = N * (assign_cpu_us * k / k_1M + walk_cpu_us * c / c_1M) / C_select   (when on)
                      k = the default clusters, sqrt(N / 4); c = N / k rows a cluster: a sample is compared with its
                      k centroids and its cluster's rows, so both parts grow with them (scaled from the 1M run)
    fit + report    = fixed seconds (flat in N: bench flat)
    total           = preflight + embed + select + dedup + fit/report (they run one after the other)

    S3 GETs = S * (r_pre + ceil(shard_MB / 5) + ceil(cache_MB / 5) + 2) + 4 * F * R
              (fsspec reads 5 MB blocks: the source once, the cache entry in pass 1, its footer in the fit (whose
              sample then reads a bounded number of row groups), its keys in pass 3; every rank task reads every
              run's index and its slice of it, every write task every range's offsets and its slice: F manifest
              files x R ranges, the term that grows as the square of the files. After embedding the driver makes
              no request per shard: tests/tasks/test_driver_requests.py)

Every constant is an argument, so a measured GPU figure replaces an assumed one without touching the code.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

OUT = Path("bench/out")

# ASSUMED (no GPU here): the aims on one H200, bf16; per GPU.
GPU_RATE = {"ViT-B/16": 5_000.0, "ViT-L/14": 1_500.0}
DIM = {"ViT-B/16": 512, "ViT-L/14": 768}  # the architectures' embedding widths (float16 in the cache)


def dedup_cpu_us(n: float, args: argparse.Namespace) -> float:
    """Dedup's CPU-µs per sample at pool ``n`` with the default clusters, scaled from the 1M run (k = 500,
    2,000 rows a cluster): the filter pass's part by the centroids, the dedup pass's by the cluster's size."""
    k = math.sqrt(n / 4)
    return args.dedup_assign_cpu_us * k / 500 + args.dedup_walk_cpu_us * (n / k) / 2_000


def model(n: float, backbone: str, args: argparse.Namespace) -> dict:
    """One row of the table: hours per stage, the limit, requests, bytes and driver memory for ``n`` samples."""
    shards = math.ceil(n / args.shard_rows)
    gpu = args.gpus * GPU_RATE[backbone]
    cpu = args.decode_cores * args.decode_rate
    hours = {
        "preflight": shards * args.preflight_requests * args.request_ms / 1e3 / args.driver_threads / 3600,
        "embed": n / min(gpu, cpu) / 3600,
        "select": n * args.select_cpu_us * 1e-6 / args.select_cores / 3600,
        "dedup": n * dedup_cpu_us(n, args) * 1e-6 / args.select_cores / 3600 if args.dedup else 0.0,
        "fit+report": args.fit_report_s / 3600,
    }
    shard_mb = args.shard_rows * args.sample_kb / 1e3
    cache_mb = args.shard_rows * DIM[backbone] * 2 / 1e6  # float16 vectors
    files = math.ceil(shards / args.shards_per_file)  # ranges = files (the default)
    gets = shards * (args.preflight_requests + math.ceil(shard_mb / 5) + math.ceil(cache_mb / 5) + 2) \
        + 4 * files * files
    # cache entry, errors, counts and lease per shard; rows, run, index, ranks, offsets, manifest part per file
    puts = shards * 4 + 6 * files
    limit = max(hours, key=hours.get)
    return {
        "backbone": backbone, "pool": f"{n:,.0f}", "shards": shards, "GPUs": args.gpus,
        "decode cores": args.decode_cores, **{f"{k} h": round(v, 2) for k, v in hours.items()},
        "total h": round(sum(hours.values()), 1),
        "limit": limit if limit != "embed" else ("embed: GPU" if gpu <= cpu else "embed: CPU decode"),
        "S3 GETs (M)": round(gets / 1e6, 2), "S3 PUTs (k)": round(puts / 1e3, 1),
        "read TB": round(n * args.sample_kb / 1e9, 1), "cache TB": round(n * DIM[backbone] * 2 / 1e12, 2),
        "driver MB": round(shards * args.driver_kb_per_shard / 1e3 + args.driver_fixed_mb),
        "GPU cost $": round(hours["embed"] * args.gpus * args.gpu_price),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench capacity")
    ap.add_argument("--pools", default="1e8,2e9")
    ap.add_argument("--gpus", type=int, default=32)
    ap.add_argument("--decode-cores", type=int, default=512, help="CPU cores decoding + preprocessing")
    ap.add_argument("--decode-rate", type=float, required=True,
                    help="MEASURED: 224-px JPEG decode + preprocess img/s per core (bench embed, bare loop)")
    ap.add_argument("--select-cpu-us", type=float, default=4.6,
                    help="MEASURED: CPU-µs per sample, score + rank + manifest (bench dselect, 10M: median 23.2 s "
                         "of 4 runs x 2 cores)")
    ap.add_argument("--select-cores", type=int, default=512)
    ap.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=True, help="pool-wide dedup on")
    ap.add_argument("--dedup-assign-cpu-us", type=float, default=15.8,
                    help="MEASURED: CPU-µs per sample of dedup's filter pass at 1M, k = 500 (bench dedup: "
                         "7.6-8.2 s x 2)")
    ap.add_argument("--dedup-walk-cpu-us", type=float, default=21.3,
                    help="MEASURED: CPU-µs per sample of the dedup pass at 1M, 2,000 rows a cluster (bench dedup: "
                         "10.6-10.7 s x 2)")
    ap.add_argument("--preflight-requests", type=float, default=5.0,
                    help="MEASURED: driver storage requests per shard before embedding: 5 not yet "
                         "embedded, 3 cached "
                         "(tests/tasks/test_driver_requests.py)")
    ap.add_argument("--request-ms", type=float, default=20.0,
                    help="ASSUMED: one S3 request's latency from the driver (no real S3 here)")
    ap.add_argument("--driver-threads", type=int, default=16,
                    help="the preflight's lookups in flight (tasks.cache.READ_THREADS; 1 in earlier releases)")
    ap.add_argument("--fit-report-s", type=float, default=16.5,
                    help="MEASURED: fit + report seconds at 10M, flat in N (bench flat: 6.2 + 10.2)")
    ap.add_argument("--shard-rows", type=int, default=10_000, help="ASSUMED: samples per source shard")
    ap.add_argument("--shards-per-file", type=int, default=64, help="the product's default")
    ap.add_argument("--sample-kb", type=float, default=40.0,
                    help="ASSUMED: encoded image + text, LAION-like (this bench's 224-px JPEGs are ~21 KB)")
    ap.add_argument("--driver-kb-per-shard", type=float, default=0.4,
                    help="ASSUMED: the plan's shard record + digest in the driver")
    ap.add_argument("--driver-fixed-mb", type=float, default=100.0, help="ASSUMED")
    ap.add_argument("--gpu-price", type=float, default=3.0, help="ASSUMED: $ per GPU-hour")
    args = ap.parse_args(argv)
    rows = [model(float(n), b, args) for n in args.pools.split(",") for b in GPU_RATE]
    print(pd.DataFrame(rows).to_string(index=False))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "capacity.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
