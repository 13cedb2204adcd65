"""Embedding throughput: the real pipeline (``tasks.embed_shards`` with the ``Embed`` stage on a local Ray) vs a
bare batched forward loop of the same model in this process, on the same samples.

Both sides decode the images with PIL (``tasks.embed.decode_image``) and run ``Backbone.embed`` in batches of
``--batch-size``; the pipeline also reads the shards, moves rows through Ray and writes the cache (fresh per run),
the bare loop gets the encoded bytes in memory. A Ray actor with ``num_cpus=c`` runs torch on ``c`` threads
(Ray sets OMP_NUM_THREADS), so the bare loop runs with ``actors x actor_cpus`` threads (same CPU budget: the
ratio that isolates pipeline overhead) and with every core (what the machine could do). The bare loops run
before Ray starts: with Ray's daemons up, multi-threaded torch slows down badly on a 2-core machine.

The pipeline runs on every other shard, then on all of them: the marginal rate (extra samples / extra
seconds) leaves out the fixed start-up (Ray Data plan, actor start, model load in the actor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import ray
import torch

from bench.models import bench_backbone
from bench.read_throughput import _reset_peak, _status_mb
from core.read import Quarantine, list_shards, read_shard
from estimator.backbones import BackboneSpec, load_backbone
from estimator.backbones.fingerprint import describe
from synth import CorpusInfo, SynthConfig, generate_corpus
from tasks.base import Resources
from tasks.cache import EmbeddingCache
from tasks.embed import Embed, decode_image
from tasks.embed_shards import ShardJob, embed_shards

OUT = Path("bench/out")
DATA = Path("data/bench")
RAY_TMP = os.environ.get("EMT_RAY_TMPDIR", tempfile.gettempdir() + "/emt-ray")


def _corpus(samples: int, shard_size: int) -> CorpusInfo:
    per_source = -(-samples // 4)
    cfg = SynthConfig(samples_per_source=per_source, shard_size=min(shard_size, per_source), workers=2)
    return generate_corpus(str(DATA / f"embed-corpus-{per_source}-{cfg.shard_size}"), cfg)


def _pool_shards(info: CorpusInfo) -> list[tuple]:
    return [(spec, uri) for spec in info.pool for uri in list_shards(spec)]


def _load_samples(shards: list[tuple]) -> tuple[list[bytes], list[str]]:
    images, texts = [], []
    for spec, uri in shards:
        for t in read_shard(spec, uri, quarantine=Quarantine()):
            images += t["image"].to_pylist()
            texts += t["text"].to_pylist()
    return images, texts


def bare_loop(spec: BackboneSpec, images: list[bytes], texts: list[str], batch: int, threads: int) -> float:
    """Seconds for decode + embed of every sample in one process, torch on ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_backbone(spec)
        model.embed([decode_image(images[0])], texts[:1])  # warm-up
        t0 = time.perf_counter()
        for s in range(0, len(images), batch):
            model.embed([decode_image(b) for b in images[s : s + batch]], texts[s : s + batch])
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)


def pipeline(spec: BackboneSpec, shards: list[tuple], args: argparse.Namespace) -> tuple[int, float, float]:
    """Samples embedded, wall seconds and the driver's peak RSS growth (MB) of one ``embed_shards`` call (actor
    start and model load included). Workers write the cache, so the driver's growth should not depend on N."""
    root = str(DATA / f"embed-cache-{uuid.uuid4().hex[:8]}")
    cache = EmbeddingCache(root=root, fingerprint=describe(spec).fingerprint)
    jobs = [ShardJob(spec=s, shard_uri=u, entry=cache.entry(s, u)) for s, u in shards]
    stage = Embed(backbone=spec, batch_size=args.batch_size, resources=Resources(cpus=args.actor_cpus))
    try:
        base = _reset_peak()
        t0 = time.perf_counter()
        summary = embed_shards(jobs, embed=stage, cache=cache, actors=args.actors, read_cpus=args.read_cpus)
        return summary.samples_embedded, time.perf_counter() - t0, _status_mb("VmHWM") - base
    finally:
        shutil.rmtree(cache.root, ignore_errors=True)


def driver_memory(args: argparse.Namespace) -> list[dict]:
    """Driver peak RSS growth for the tiny model on N and 10 N samples (``--memory-samples``)."""
    spec, rows = bench_backbone("tiny"), []
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=RAY_TMP)
    try:
        pipeline(spec, _pool_shards(_corpus(400, 100)), args)  # warm-up: Ray Data's first plan costs memory once
        for n in (args.memory_samples, 10 * args.memory_samples):
            shards = _pool_shards(_corpus(n, args.tiny_shard_size))
            done, wall, growth = pipeline(spec, shards, args)
            rows.append({"samples": done, "shards": len(shards), "seconds": round(wall, 1),
                         "driver_peak_rss_growth_mb": round(growth, 1)})
            print(json.dumps(rows[-1]))
    finally:
        ray.shutdown()
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench embed")
    ap.add_argument("--samples", type=int, default=400, help="pool samples embedded with --model")
    ap.add_argument("--tiny-samples", type=int, default=20000, help="pool samples for the tiny model row (0: skip)")
    ap.add_argument("--tiny-shard-size", type=int, default=1000)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip arch (seeded random weights) or tiny")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--actor-cpus", type=float, default=1.0)
    ap.add_argument("--read-cpus", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=50, help="with --model; no multiple of --batch-size")
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--memory-samples", type=int, default=0,
                    help="instead: driver peak memory for this many tiny-model samples and 10x as many")
    args = ap.parse_args(argv)
    if args.memory_samples:
        rows = driver_memory(args)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "embed_driver_memory.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
        return 0

    DATA.mkdir(parents=True, exist_ok=True)
    models = [(args.model, bench_backbone(args.model), args.samples, args.shard_size)]
    if args.tiny_samples:
        models.append(("tiny-open_clip", bench_backbone("tiny"), args.tiny_samples, args.tiny_shard_size))
    budget, cores = max(1, int(args.actors * args.actor_cpus)), args.ray_cpus
    rows, work = [], []
    for name, spec, n, shard_size in models:  # bare loops first: with Ray up, 2 torch threads collapse
        shards = _pool_shards(_corpus(n, shard_size))
        images, texts = _load_samples(shards)
        print(f"[{name}] {len(images)} samples in {len(shards)} shards")
        bare = {th: len(images) / bare_loop(spec, images, texts, args.batch_size, th) for th in sorted({budget, cores})}
        rows.append({"model": name, "samples": len(images), **{f"bare_{th}thr_per_s": round(r, 1)
                                                                for th, r in bare.items()}})
        work.append((spec, shards))
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, _temp_dir=RAY_TMP)
    try:
        for row, (spec, shards) in zip(rows, work, strict=True):
            n_half, wall_half, _ = pipeline(spec, shards[::2], args)  # every other shard: all sources
            n, wall, _ = pipeline(spec, shards, args)
            marginal = (n - n_half) / (wall - wall_half) if wall > wall_half else float("nan")  # nan: noise won
            row |= {"pipeline_per_s": round(n / wall, 1), "pipeline_marginal_per_s": round(marginal, 1),
                    "startup_s": round(wall - n / marginal, 1)}
            row["pipeline/bare_same_cpus"] = round(row["pipeline_per_s"] / row[f"bare_{budget}thr_per_s"], 2)
            row["marginal/bare_same_cpus"] = round(marginal / row[f"bare_{budget}thr_per_s"], 2)
            row["pipeline/bare_all_cores"] = round(row["pipeline_per_s"] / row[f"bare_{cores}thr_per_s"], 2)
            print(json.dumps(row))
    finally:
        ray.shutdown()
    print("\n" + pd.DataFrame(rows).set_index("model").T.to_string())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "embed_throughput.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
