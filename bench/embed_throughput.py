"""Embedding throughput on the same WebDataset shards, three ways:

* **product**: ``tasks.embed_shards`` (the curate flow's embed step) on a local Ray: each actor holds the model and
  reads its shard; CPU tasks decode and preprocess (``tasks.prepare``), the actor runs only forward passes and
  writes the cache. Run with each ``--configs`` entry (actor CPUs / read CPUs / prepare CPUs).
* **plain Ray Data**: what a user would write: ``read_webdataset`` (its read tasks decode the images) →
  ``map_batches`` over an actor holding the same model → ``write_parquet``.
* **bare loop**: decode + ``Backbone.embed`` in batches in this process, torch on 1 thread and on every core: what
  the machine can do with no pipeline at all.

The bare loops run before Ray starts: with Ray's daemons up, multi-threaded torch slows down badly on a 2-core
machine. Each Ray pipeline runs on every other shard, then on all of them: the marginal rate (extra samples /
extra seconds) leaves out the fixed start-up (plan, actor start, model load).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from PIL import Image

from bench.models import bench_backbone
from bench.read_throughput import _reset_peak, _status_mb
from core.location import Location
from core.read import Quarantine, list_shards, read_shard
from estimator.backbones import BackboneSpec, load_backbone
from estimator.backbones.fingerprint import describe
from synth import CorpusInfo, SynthConfig, generate_corpus
from tasks.cache import EmbeddingCache
from tasks.embed import Embed, decode_image
from tasks.embed_shards import ShardJob, embed_shards
from tasks.executor import Resources

OUT = Path("bench/out")
DATA = Path("data/bench")
RAY_TMP = os.environ.get("EMT_RAY_TMPDIR", tempfile.gettempdir() + "/emt-ray")


def _corpus(samples: int, shard_size: int) -> CorpusInfo:
    per_source = -(-samples // 4)
    cfg = SynthConfig(samples_per_source=per_source, shard_size=min(shard_size, per_source), workers=2)
    return generate_corpus(str(DATA / f"embed-corpus-{per_source}-{cfg.shard_size}"), cfg)


def _shards(info: CorpusInfo, formats: tuple[str, ...] = ("webdataset", "parquet")) -> list[tuple]:
    return [(spec, uri) for spec in info.pool if spec.format in formats for uri in list_shards(spec)]


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


def product(spec: BackboneSpec, shards: list[tuple], args: argparse.Namespace, config: tuple[float, ...]
            ) -> tuple[int, float, float, dict]:
    """Samples embedded, wall seconds, the driver's peak RSS growth (MB) and the job's stage seconds of one
    ``embed_shards`` call (actor start and model load included)."""
    actor_cpus, read_cpus, prepare_cpus = config
    root = str(DATA / f"embed-cache-{uuid.uuid4().hex[:8]}")
    cache = EmbeddingCache(root=Location(root), fingerprint=describe(spec).fingerprint)
    jobs = [ShardJob(spec=s, shard_uri=u, entry=cache.entry(s, u)) for s, u in shards]
    stage = Embed(backbone=spec, batch_size=args.batch_size, resources=Resources(cpus=actor_cpus))
    try:
        base = _reset_peak()
        t0 = time.perf_counter()
        summary = embed_shards(jobs, embed=stage, cache=cache, actors=args.actors, read_cpus=read_cpus,
                               prepare_cpus=prepare_cpus)
        wall = time.perf_counter() - t0
        return summary.samples_embedded, wall, _status_mb("VmHWM") - base, summary.stats()
    finally:
        shutil.rmtree(cache.root.uri, ignore_errors=True)


class PlainEmbedder:
    """The model actor of the plain pipeline: images arrive decoded (numpy) by ``read_webdataset``."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.model = load_backbone(spec)

    def __call__(self, batch: dict) -> dict:
        column = batch["jpg"] if "jpg" in batch else batch["png"]  # one shard's block holds one source's kind
        images = [Image.fromarray(a) if isinstance(a, np.ndarray) else Image.open(io.BytesIO(a)) for a in column]
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in batch["txt"]]
        return {"key": batch["__key__"], "embedding": list(self.model.embed(images, texts))}


def plain(spec: BackboneSpec, shards: list[tuple], args: argparse.Namespace) -> tuple[int, float]:
    """Samples and wall seconds of read_webdataset -> map_batches(model actor) -> write_parquet."""
    out = str((DATA / f"plain-{uuid.uuid4().hex[:8]}").resolve())
    try:
        t0 = time.perf_counter()
        ds = ray.data.read_webdataset([str(Path(u).resolve()) for _, u in shards])
        ds = ds.map_batches(PlainEmbedder, fn_constructor_kwargs={"spec": spec}, batch_size=args.batch_size,
                            compute=ray.data.ActorPoolStrategy(size=args.actors), num_cpus=args.plain_actor_cpus)
        ds.write_parquet(out)
        wall = time.perf_counter() - t0
        return ray.data.read_parquet(out).count(), wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _marginal(half: tuple[int, float], full: tuple[int, float]) -> float:
    (n_half, wall_half), (n, wall) = half, full
    return (n - n_half) / (wall - wall_half) if wall > wall_half else float("nan")  # nan: noise won


def driver_memory(args: argparse.Namespace) -> list[dict]:
    """Driver peak RSS growth for the tiny model on N and 10 N samples (``--memory-samples``)."""
    spec, rows = bench_backbone("tiny"), []
    config = args.configs[0]
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=RAY_TMP)
    try:
        product(spec, _shards(_corpus(400, 100)), args, config)  # warm-up: Ray Data's first plan costs memory once
        for n in (args.memory_samples, 10 * args.memory_samples):
            shards = _shards(_corpus(n, args.tiny_shard_size))
            done, wall, growth, _ = product(spec, shards, args, config)
            rows.append({"samples": done, "shards": len(shards), "seconds": round(wall, 1),
                         "driver_peak_rss_growth_mb": round(growth, 1)})
            print(json.dumps(rows[-1]))
    finally:
        ray.shutdown()
    return rows


def _config(text: str) -> tuple[float, float, float]:
    parts = tuple(float(x) for x in text.split("/"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ACTOR_CPUS/READ_CPUS/PREPARE_CPUS, e.g. 1/0.5/0.5")
    return parts  # type: ignore[return-value]


def compare(name: str, spec: BackboneSpec, shards: list[tuple], bare: dict[int, float], n_samples: int,
            args: argparse.Namespace) -> dict:
    """One row: the bare loops' rates (measured before Ray started), then each pipeline, half then all shards."""
    row: dict = {"model": name, "samples": n_samples, "shards": len(shards),
                 **{f"bare_{th}thr_per_s": round(r, 1) for th, r in bare.items()}}
    best_bare = max(bare.values())
    for config in args.configs:
        label = "product " + "/".join(f"{c:g}" for c in config)
        half = product(spec, shards[::2], args, config)
        full = product(spec, shards, args, config)
        marginal = _marginal(half[:2], full[:2])
        stats = full[3]
        busy = sum(stats[f"seconds_{k}"] for k in ("read", "prepare", "embed", "write")) or 1.0
        row |= {f"{label} per_s": round(full[0] / full[1], 1), f"{label} marginal_per_s": round(marginal, 1),
                f"{label} model_waits_share": round((stats["seconds_read"] + stats["seconds_prepare"]) / busy, 2),
                f"{label} / bare_all (marginal)": round(marginal / best_bare, 2)}
    if args.plain:
        half, full = plain(spec, shards[::2], args), plain(spec, shards, args)
        marginal = _marginal(half, full)
        row |= {"plain per_s": round(full[0] / full[1], 1), "plain marginal_per_s": round(marginal, 1)}
        for config in args.configs:
            label = "product " + "/".join(f"{c:g}" for c in config)
            row[f"{label} / plain (marginal)"] = round(row[f"{label} marginal_per_s"] / marginal, 2)
            row[f"{label} / plain (wall)"] = round(row[f"{label} per_s"] / row["plain per_s"], 2)
    print(json.dumps(row))
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench embed")
    ap.add_argument("--samples", type=int, default=800, help="pool samples generated for --model (WebDataset half)")
    ap.add_argument("--tiny-samples", type=int, default=40000, help="pool samples for the tiny model (0: skip)")
    ap.add_argument("--tiny-shard-size", type=int, default=1000)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip arch (seeded random weights); none: skip")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--configs", type=_config, nargs="+", default=[(1, 0.5, 0.5), (1, 0.25, 0.25)],
                    help="product settings ACTOR_CPUS/READ_CPUS/PREPARE_CPUS, one run each")
    ap.add_argument("--plain-actor-cpus", type=float, default=1.0)
    ap.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain Ray Data pipeline")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=100, help="with --model; no multiple of --batch-size")
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--memory-samples", type=int, default=0,
                    help="instead: driver peak memory for this many tiny-model samples and 10x as many")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.memory_samples:
        rows = driver_memory(args)
        (OUT / "embed_driver_memory.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
        return 0

    DATA.mkdir(parents=True, exist_ok=True)
    models = [] if args.model == "none" else [(args.model, bench_backbone(args.model), args.samples, args.shard_size)]
    if args.tiny_samples:
        models.append(("tiny-open_clip", bench_backbone("tiny"), args.tiny_samples, args.tiny_shard_size))
    work = []
    for name, spec, n, shard_size in models:  # bare loops first: with Ray up, multi-threaded torch collapses
        shards = _shards(_corpus(n, shard_size), ("webdataset",))  # what read_webdataset reads too
        images, texts = _load_samples(shards)
        print(f"[{name}] {len(images)} samples in {len(shards)} WebDataset shards")
        bare = {th: len(images) / bare_loop(spec, images, texts, args.batch_size, th)
                for th in sorted({1, args.ray_cpus})}
        work.append((name, spec, shards, bare, len(images)))
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=RAY_TMP)
    try:
        rows = [compare(*w, args) for w in work]
    finally:
        ray.shutdown()
    print("\n" + pd.DataFrame(rows).set_index("model").T.to_string())
    (OUT / "embed_throughput.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    return 0
