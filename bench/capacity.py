"""Capacity model: hours, S3 requests and bytes, and driver memory to curate N samples with backbone B on G GPUs and
C CPU cores, from per-sample costs measured on this machine (bench/README.md) and *labelled assumptions* where
nothing could be measured here (GPU throughput: no GPU on this machine).

    embed hours  = N / min(G * gpu_rate[B], C_decode * decode_rate)       (the slower of the two limits)
    select hours = N * select_cpu_s / C_select                             (three distributed passes, CPU)
    S3 GETs      = shards * (ceil(shard_MB / 5) + ceil(cache_MB / 5) + 2) + 4 * F * R
                   (fsspec reads 5 MB blocks: the source once, the cache entry in pass 1, its footer in the fit (whose
                   sample then reads a bounded number of row groups), its keys in pass 3; every rank task reads every
                   run's index and its slice of it, every write task every range's offsets and its slice: F manifest
                   files x R ranges, the term that grows as the square of the files)

Every constant is an argument, so a measured GPU figure replaces an assumed one without touching the code.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

OUT = Path("bench/out")

# Assumptions (not measured here: no GPU). The aims on one H200, bf16, random weights; per GPU.
GPU_RATE = {"ViT-B/16": 5_000.0, "ViT-L/14": 1_500.0}
DIM = {"ViT-B/16": 512, "ViT-L/14": 768}


def model(n: float, backbone: str, args: argparse.Namespace) -> dict:
    shards = math.ceil(n / args.shard_rows)
    gpu = args.gpus * GPU_RATE[backbone]
    cpu = args.decode_cores * args.decode_rate
    embed_h = n / min(gpu, cpu) / 3600
    select_h = n * args.select_cpu_us * 1e-6 / args.select_cores / 3600
    shard_mb = args.shard_rows * args.sample_kb / 1e3
    cache_mb = args.shard_rows * DIM[backbone] * 2 / 1e6  # float16 vectors
    files = math.ceil(shards / args.shards_per_file)  # ranges = files (the default)
    gets = shards * (math.ceil(shard_mb / 5) + math.ceil(cache_mb / 5) + 2) + 4 * files * files
    # cache entry, errors, counts and lease per shard; rows, run, index, ranks, offsets, manifest part per file
    puts = shards * 4 + 6 * files
    return {
        "backbone": backbone, "pool": f"{n:,.0f}", "manifest files": files, "GPUs": args.gpus,
        "decode cores": args.decode_cores,
        "embed h": round(embed_h, 1), "embed limited by": "GPU" if gpu <= cpu else "CPU decode",
        "score+select+manifest h": round(select_h, 2), "S3 GETs (M)": round(gets / 1e6, 2),
        "S3 PUTs (k)": round(puts / 1e3, 1), "read TB": round(n * args.sample_kb / 1e9, 1),
        "cache TB": round(n * DIM[backbone] * 2 / 1e12, 2),
        "driver MB": round(shards * args.driver_bytes_per_shard / 1e6 + args.driver_fixed_mb),
        "GPU cost $": round(embed_h * args.gpus * args.gpu_price),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench capacity")
    ap.add_argument("--pools", default="1e8,2e9")
    ap.add_argument("--gpus", type=int, default=32)
    ap.add_argument("--decode-cores", type=int, default=512, help="CPU cores decoding + preprocessing")
    ap.add_argument("--decode-rate", type=float, default=250.0, help="img/s per core, 224 px (measured, issue 10)")
    ap.add_argument("--select-cpu-us", type=float, required=True, help="CPU-µs per sample, bench dselect")
    ap.add_argument("--select-cores", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=10_000)
    ap.add_argument("--shards-per-file", type=int, default=64)
    ap.add_argument("--sample-kb", type=float, default=40.0, help="encoded image + text, LAION-like (assumed)")
    ap.add_argument("--driver-bytes-per-shard", type=float, default=400.0, help="shard record + digest")
    ap.add_argument("--driver-fixed-mb", type=float, default=100.0)
    ap.add_argument("--gpu-price", type=float, default=3.0, help="$ per GPU-hour (assumed)")
    args = ap.parse_args(argv)
    rows = [model(float(n), b, args) for n in args.pools.split(",") for b in GPU_RATE]
    print(pd.DataFrame(rows).to_string(index=False))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "capacity.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
