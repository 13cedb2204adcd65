"""Embedding throughput on the same WebDataset shards of 224-px JPEGs (``bench.jpeg_corpus``), three ways:

* **product**: ``tasks.embed_shards`` (the curate flow's embed step) on a local Ray: each actor holds the model,
  reads its shard and writes the cache; its batches are decoded and preprocessed (``tasks.prepare``) on its own
  threads or on CPU tasks. Run with each ``--configs`` entry: ``auto`` (the flow's defaults for the cluster,
  ``tasks.embed_shards.embed_cpus``: on CPUs only, the actor decodes), ``actor`` or ``tasks`` (where decoding
  runs, CPUs by default) or ACTOR/READ/PREPARE CPUs (on CPU tasks).
* **plain Ray Data**: what a user would write: ``read_webdataset`` (its read tasks decode the images) →
  ``map_batches`` over an actor holding the same model → ``write_parquet``.
* **bare loop**: decode + preprocess + forward in batches in this process, torch on every core: what the machine
  does with no pipeline at all. Its forward passes are timed apart, to set against the actor's forward alone.
  ``--bare-dtypes`` runs it again in other dtypes (CPU workers default to float32), each against float32's.

The machine these run on is shared and noisy, so the arms run in alternated rounds (the order rotates each
round) and every figure reported is a ratio within one round: median and spread over the rounds, with the load
average at each round's start. Each Ray pipeline runs on every other shard, then on all of them: the marginal
rate (extra samples / extra seconds) leaves out the fixed start-up (plan, actor start, model load).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from PIL import Image

from bench.jpeg_corpus import jpeg_shards
from bench.models import bench_backbone
from bench.read_throughput import _reset_peak, _status_mb
from core.location import Location
from core.read import Quarantine, list_shards, read_shard
from estimator.backbones import BackboneSpec, load_backbone
from estimator.backbones.fingerprint import describe
from estimator.threads import cpu_threads
from flows.runtime import local_ray, ray_temp_dir
from synth import CorpusInfo, SynthConfig, generate_corpus
from tasks.cache import EmbeddingCache
from tasks.embed import Embed, decode_image
from tasks.embed_shards import ShardJob, embed_shards
from tasks.ray_config import RayConfig

OUT = Path("bench/out")
DATA = Path("data/bench")
RAY_TMP = ray_temp_dir()


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


def bare_loop(spec: BackboneSpec, images: list[bytes], texts: list[str], batch: int, threads: int
              ) -> tuple[float, float]:
    """Seconds for decode + preprocess + forward of every sample in one process, torch on ``threads`` threads,
    and the forward passes' share of them (model load and a warm-up pass not counted)."""
    with cpu_threads(threads):
        model = load_backbone(spec)
        model.embed([decode_image(images[0])], texts[:1])  # warm-up
        forward = 0.0
        t0 = time.perf_counter()
        for s in range(0, len(images), batch):
            prepared = model.preprocessor([decode_image(b) for b in images[s : s + batch]], texts[s : s + batch])
            f0 = time.perf_counter()
            model.forward(prepared)
            forward += time.perf_counter() - f0
        return time.perf_counter() - t0, forward


# (the job's Ray settings, shards each actor holds at once)
Config = tuple[RayConfig, int]


def product(spec: BackboneSpec, shards: list[tuple], args: argparse.Namespace, config: Config
            ) -> tuple[int, float, float, dict]:
    """Samples embedded, wall seconds, the driver's peak RSS growth (MB) and the job's stage seconds of one
    ``embed_shards`` call (actor start and model load included)."""
    ray_config, calls = config
    root = str(DATA / f"embed-cache-{uuid.uuid4().hex[:8]}")
    cache = EmbeddingCache(root=Location(root), fingerprint=describe(spec).fingerprint)
    jobs = [ShardJob(spec=s, shard_uri=u, entry=cache.entry(s, u)) for s, u in shards]
    stage = Embed(backbone=spec, batch_size=args.batch_size)
    try:
        base = _reset_peak()
        t0 = time.perf_counter()
        summary = embed_shards(jobs, embed=stage, cache=cache, config=ray_config.model_copy(
            update={"embed_actors": args.actors}), calls=calls)
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
    with local_ray(temp_dir=RAY_TMP, num_cpus=args.ray_cpus):
        product(spec, _shards(_corpus(400, 100)), args, config)  # warm-up: Ray Data's first plan costs memory once
        for n in (args.memory_samples, 10 * args.memory_samples):
            shards = _shards(_corpus(n, args.tiny_shard_size))
            done, wall, growth, _ = product(spec, shards, args, config)
            rows.append({"samples": done, "shards": len(shards), "seconds": round(wall, 1),
                         "driver_peak_rss_growth_mb": round(growth, 1)})
            print(json.dumps(rows[-1]))
    return rows


def _config(text: str) -> Config:
    where, _, calls = text.partition("@")
    if where in ("auto", "actor", "tasks"):
        return RayConfig(prepare=where), int(calls or 2)
    parts = where.split("/")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, actor, tasks or ACTOR/READ/PREPARE CPUs, e.g. "
                                         "1/0.5/0.5, optionally @CALLS (shards per actor at once, default 2)")
    actor, read, prepare = (float(x) for x in parts)
    return RayConfig(prepare="tasks", actor_cpus=actor, read_cpus=read, prepare_cpus=prepare), int(calls or 2)


def _label(config: Config) -> str:
    c, calls = config
    cpus = [c.actor_cpus, c.read_cpus, c.prepare_cpus]
    return "product " + (c.prepare if None in cpus else "/".join(f"{x:g}" for x in cpus)) + f"@{calls}"


def _round(spec: BackboneSpec, shards: list[tuple], images: list[bytes], texts: list[str], order: list,
           args: argparse.Namespace) -> dict:
    """One round: every arm once, in ``order``; rates in samples/s."""
    res: dict = {"load_1min": round(os.getloadavg()[0], 2)}
    for arm in order:
        if arm == "bare":
            total, forward = bare_loop(spec, images, texts, args.batch_size, args.ray_cpus)
            res |= {"bare": len(images) / total, "bare forward": len(images) / forward,
                    "bare decode+preprocess": len(images) / (total - forward)}  # per core: PIL on one thread
        elif isinstance(arm, str) and arm.startswith("bare "):  # the bare loop in another dtype (--bare-dtypes)
            dtype = arm.removeprefix("bare ")
            total, forward = bare_loop(spec.model_copy(update={"dtype": dtype}), images, texts, args.batch_size,
                                       args.ray_cpus)
            res |= {arm: len(images) / total, f"{arm} forward": len(images) / forward}
        elif arm == "plain":
            half, full = plain(spec, shards[::2], args), plain(spec, shards, args)
            res |= {"plain": full[0] / full[1], "plain marginal": _marginal(half, full)}
        else:
            label = _label(arm)
            half, full = product(spec, shards[::2], args, arm), product(spec, shards, args, arm)
            stats = full[3]
            busy = sum(stats[f"seconds_{k}"] for k in ("read", "prepare", "embed", "write")) or 1.0
            res |= {label: full[0] / full[1], f"{label} marginal": _marginal(half[:2], full[:2]),
                    f"{label} forward": full[0] / stats["seconds_embed"],
                    f"{label} model waits": (stats["seconds_read"] + stats["seconds_prepare"]) / busy}
    return res


def _ratios(res: dict, args: argparse.Namespace) -> dict:
    out = {}
    for dtype in args.bare_dtypes:
        out[f"bare {dtype} / bare, wall"] = res[f"bare {dtype}"] / res["bare"]
        out[f"bare {dtype} forward / bare forward"] = res[f"bare {dtype} forward"] / res["bare forward"]
    for config in args.configs:
        label = _label(config)
        out[f"{label} / bare, wall"] = res[label] / res["bare"]
        out[f"{label} / bare, marginal"] = res[f"{label} marginal"] / res["bare"]
        out[f"{label} forward / bare forward"] = res[f"{label} forward"] / res["bare forward"]
        if args.plain:
            out[f"{label} / plain, wall"] = res[label] / res["plain"]
            out[f"{label} / plain, marginal"] = res[f"{label} marginal"] / res["plain marginal"]
    return out


def compare(name: str, spec: BackboneSpec, shards: list[tuple], args: argparse.Namespace) -> dict:
    """``--rounds`` alternated rounds of every arm (the order rotated each round); each ratio's median and spread."""
    images, texts = _load_samples(shards)
    print(f"[{name}] {len(images)} samples in {len(shards)} WebDataset shards")
    arms: list = ["bare", *(f"bare {d}" for d in args.bare_dtypes), *args.configs] + (["plain"] if args.plain else [])
    rounds = []
    for r in range(args.rounds):
        order = arms[r % len(arms):] + arms[: r % len(arms)]
        res = _round(spec, shards, images, texts, order, args)
        res |= _ratios(res, args)
        rounds.append({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()})
        print(json.dumps({"model": name, "round": r, **rounds[-1]}))
    keys = [k for k in rounds[0] if k != "load_1min"]
    summary = {k: {"median": round(float(np.nanmedian([r[k] for r in rounds])), 3),
                   "min": min(r[k] for r in rounds), "max": max(r[k] for r in rounds)} for k in keys}
    loads = [r["load_1min"] for r in rounds]
    return {"model": name, "samples": len(images), "shards": len(shards), "load_1min": [min(loads), max(loads)],
            "summary": summary, "rounds": rounds}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench embed")
    ap.add_argument("--samples", type=int, default=128, help="224-px JPEGs for --model")
    ap.add_argument("--shard-size", type=int, default=32, help="with --model; no multiple of --batch-size")
    ap.add_argument("--tiny-samples", type=int, default=2048, help="224-px JPEGs for the tiny model (0: skip)")
    ap.add_argument("--tiny-shard-size", type=int, default=256)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip arch (seeded random weights); none: skip")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--configs", type=_config, nargs="+", default=[_config("auto@2"), _config("tasks@2")],
                    help="product settings: auto (the flow's defaults), actor or tasks (where decode + preprocess "
                         "run, CPUs by default) or ACTOR/READ/PREPARE CPUs (on tasks), then @CALLS (shards each "
                         "actor holds at once; default 2, the product's); the default pair is the product on this "
                         "cluster and the same on CPU tasks")
    ap.add_argument("--plain-actor-cpus", type=float, default=1.0)
    ap.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain Ray Data pipeline")
    ap.add_argument("--bare-dtypes", nargs="*", default=[], choices=["bfloat16", "float16"],
                    help="also run the bare loop in these dtypes (the others run in float32 on CPU): their speed "
                         "against float32's, e.g. bfloat16 on a CPU with AVX512-BF16 or AMX")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ray-cpus", type=int, default=2, help="the local Ray's CPUs, and the bare loop's threads")
    ap.add_argument("--memory-samples", type=int, default=0,
                    help="instead: driver peak memory for this many tiny-model samples and 10x as many")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.memory_samples:
        rows = driver_memory(args)
        (OUT / "embed_driver_memory.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1,
                                                                   default=str))
        return 0

    DATA.mkdir(parents=True, exist_ok=True)
    models = [] if args.model == "none" else [(args.model, bench_backbone(args.model), args.samples, args.shard_size)]
    if args.tiny_samples:
        models.append(("tiny-open_clip", bench_backbone("tiny"), args.tiny_samples, args.tiny_shard_size))
    with local_ray(temp_dir=RAY_TMP, num_cpus=args.ray_cpus):  # as a flow starts one: workers at this priority
        rows = [compare(name, spec, jpeg_shards(DATA, samples=n, shard_size=size), args)
                for name, spec, n, size in models]
    table = {(r["model"], k): {"median": v["median"], "spread": f"{v['min']:g}-{v['max']:g}"}
             for r in rows for k, v in r["summary"].items()}
    print("\n" + pd.DataFrame(table).T.to_string())
    print("load average (1 min) per round:", {r["model"]: [x["load_1min"] for x in r["rounds"]] for r in rows})
    (OUT / "embed_throughput.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    return 0
