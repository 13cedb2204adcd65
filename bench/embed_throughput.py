"""Embedding throughput: the real pipeline (``tasks.embed_shards`` with the ``Embed`` stage on a local Ray) vs a
bare batched forward loop of the same model in this process, on the same samples.

Both sides decode the images with PIL (``tasks.embed.decode_image``) and run ``Backbone.embed`` in batches of
``--batch-size``; the pipeline also reads the shards, moves rows through Ray and writes the cache (fresh per run),
the bare loop gets the encoded bytes in memory. A Ray actor with ``num_cpus=c`` runs torch on ``c`` threads
(Ray sets OMP_NUM_THREADS), so the bare loop runs twice: with ``actors x actor_cpus`` threads (same CPU budget:
the ratio that isolates pipeline overhead) and with every core (what the machine could do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import ray
import torch

from estimator.backbones import BackboneSpec, load_backbone
from estimator.backbones.tiny import save_tiny_backbone
from tasks.base import Resources
from tasks.cache import EmbeddingCache
from tasks.embed import Embed, decode_image
from tasks.embed_shards import ShardJob, embed_shards
from tasks.read import Quarantine, list_shards, read_shard
from tasks.synth import CorpusInfo, SynthConfig, generate_corpus

OUT = Path("bench/out")
DATA = Path("data/bench")
RAY_TMP = os.environ.get("EMT_RAY_TMPDIR", tempfile.gettempdir() + "/emt-ray")


@dataclass(frozen=True)
class _TimedCache(EmbeddingCache):
    """The real cache, noting when each shard entry is written (for the steady-state rate)."""

    writes: list[tuple[float, int]] = field(default_factory=list)

    def write(self, entry: str, shard_uri: str, embeddings: pa.Table, errors: pa.Table, dtype: str) -> None:
        super().write(entry, shard_uri, embeddings, errors, dtype)
        self.writes.append((time.perf_counter(), embeddings.num_rows))


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


def pipeline(spec: BackboneSpec, shards: list[tuple], args: argparse.Namespace) -> dict:
    """Wall seconds of ``embed_shards`` (actor start and model load included) and its steady-state rate."""
    fingerprint = load_backbone(spec).fingerprint
    root = DATA / f"embed-cache-{uuid.uuid4().hex[:8]}"
    cache = _TimedCache(root=str(root), fingerprint=fingerprint)
    jobs = [ShardJob(spec=s, shard_uri=u, entry=cache.entry(u)) for s, u in shards]
    stage = Embed(backbone=spec, batch_size=args.batch_size, resources=Resources(cpus=args.actor_cpus))
    try:
        t0 = time.perf_counter()
        summary = embed_shards(jobs, embed=stage, cache=cache, actors=args.actors, read_cpus=args.read_cpus)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (t_first, _), *rest = cache.writes
    steady = sum(n for _, n in rest) / (cache.writes[-1][0] - t_first) if rest else float("nan")
    return {"wall_s": wall, "samples": summary.samples_embedded, "steady_per_s": steady,
            "first_shard_s": t_first - t0}


def _row(name: str, spec: BackboneSpec, samples: int, args: argparse.Namespace) -> dict:
    info = _corpus(samples, args.shard_size)
    shards = _pool_shards(info)
    images, texts = _load_samples(shards)
    budget = max(1, int(args.actors * args.actor_cpus))
    cores = args.ray_cpus
    print(f"[{name}] {len(images)} samples in {len(shards)} shards")
    b_budget = bare_loop(spec, images, texts, args.batch_size, budget)
    p = pipeline(spec, shards, args)
    b_all = bare_loop(spec, images, texts, args.batch_size, cores) if cores != budget else b_budget
    n = len(images)
    row = {"model": name, "samples": n, "pipeline_per_s": round(p["samples"] / p["wall_s"], 1),
           "pipeline_steady_per_s": round(p["steady_per_s"], 1), "first_shard_s": round(p["first_shard_s"], 1),
           f"bare_{budget}thr_per_s": round(n / b_budget, 1), f"bare_{cores}thr_per_s": round(n / b_all, 1)}
    row["pipeline/bare_same_cpus"] = round(row["pipeline_per_s"] / row[f"bare_{budget}thr_per_s"], 2)
    row["steady/bare_same_cpus"] = round(row["pipeline_steady_per_s"] / row[f"bare_{budget}thr_per_s"], 2)
    row["pipeline/bare_all_cores"] = round(row["pipeline_per_s"] / row[f"bare_{cores}thr_per_s"], 2)
    print(json.dumps(row))
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench embed")
    ap.add_argument("--samples", type=int, default=400, help="pool samples embedded with --model")
    ap.add_argument("--tiny-samples", type=int, default=4000, help="pool samples for the tiny model row (0: skip)")
    ap.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights (no download)")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--actor-cpus", type=float, default=1.0)
    ap.add_argument("--read-cpus", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=100, help="keep it no multiple of --batch-size")
    ap.add_argument("--ray-cpus", type=int, default=2)
    args = ap.parse_args(argv)

    DATA.mkdir(parents=True, exist_ok=True)
    tiny = save_tiny_backbone("open_clip", str(DATA / "models" / "tiny-open_clip"), seed=0)
    models = [(args.model, BackboneSpec(kind="open_clip", model=args.model, modality="image"), args.samples)]
    if args.tiny_samples:
        models.append(("tiny-open_clip", tiny.model_copy(update={"modality": "image"}), args.tiny_samples))
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, _temp_dir=RAY_TMP)
    try:
        rows = [_row(name, spec, n, args) for name, spec, n in models]
    finally:
        ray.shutdown()
    print("\n" + pd.DataFrame(rows).set_index("model").T.to_string())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "embed_throughput.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
