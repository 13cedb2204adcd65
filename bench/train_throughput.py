"""Training throughput on CPU with the tiny models: samples/s of the real recipes (``training.recipes``) and the
share of step time spent waiting for data (DataLoader wait / step time), for both objectives, with the data
read in the loop's own process (0 workers) and by DataLoader worker processes.

Figures come from the tracker's windows after the first ``--log-every`` steps (model load, first reads and
worker start-up excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import torch

from core.manifest import write_manifest
from core.read import Quarantine, read_source
from synth import CorpusInfo, SynthConfig, generate_corpus
from training.config import FinetuneConfig, MidtrainConfig, RobotDataConfig, TrainConfig
from training.metrics import MemoryTracker
from training.recipes import finetune, midtrain
from training.vlm import save_tiny_vlm

OUT = Path("bench/out")
DATA = Path("data/bench")


def manifest_of_every_sample(uri: str, corpus: CorpusInfo) -> str:
    """Every pool sample selected (the bench measures training, not curation)."""
    parts = []
    for spec in corpus.pool:
        t = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        parts.append(pa.table({"sample_id": t["sample_id"], "source": t["source"], "shard_uri": t["shard_uri"],
                               "key": t["key"], "score": pa.array([1.0] * t.num_rows, pa.float32()),
                               "rank": pa.array(range(t.num_rows), pa.int64()),
                               "selected": pa.array([True] * t.num_rows)}))
    write_manifest(uri, parts, {"run_id": "bench", "pool": [s.model_dump(mode="json") for s in corpus.pool]})
    return uri


@contextlib.contextmanager
def training_inputs(**size: int) -> Iterator[tuple[str, CorpusInfo, str, str]]:
    """(scratch dir, corpus, tiny VLM, manifest) of the training benches: the demo-sized corpus (4 x 100 pool
    samples, 2 x 8 robot episodes of 20 frames), the tiny Llava (``size``: ``save_tiny_vlm``'s), a manifest
    selecting every pool sample."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    DATA.mkdir(parents=True, exist_ok=True)
    corpus = generate_corpus(str(DATA / "train-corpus"), SynthConfig(samples_per_source=100, shard_size=50,
                                                                     image_size=64, robot_episodes=8,
                                                                     frames_per_episode=20))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = manifest_of_every_sample(f"{tmp}/curated/manifest.parquet", corpus)
        yield tmp, corpus, save_tiny_vlm(f"{tmp}/vlm", **size), manifest


def _measure(tracker: MemoryTracker, skip: int) -> dict[str, float]:
    windows = [m for s, m in tracker.metrics if s > skip and "samples_per_s" in m]
    mean = lambda k: sum(w[k] for w in windows) / len(windows)  # noqa: E731
    return {"samples_per_s": round(mean("samples_per_s"), 1), "tokens_per_s": round(mean("tokens_per_s")),
            "data_wait_share": round(mean("data_wait_share"), 3)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench train")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader worker counts to compare")
    ap.add_argument("--width", type=int, help="the tiny Llava's hidden size (default: save_tiny_vlm's)")
    ap.add_argument("--layers", type=int, help="its layers (default: save_tiny_vlm's)")
    args = ap.parse_args(argv)
    rows = []
    size = {k: v for k, v in (("width", args.width), ("layers", args.layers)) if v is not None}
    with training_inputs(**size) as (tmp, corpus, vlm, manifest):
        for workers in args.workers:
            train = TrainConfig(steps=args.steps, lr=1e-3, batch_size=args.batch_size, log_every=args.log_every,
                                num_workers=workers, shuffle_buffer=64)
            for objective in ("midtrain", "finetune"):
                tracker = MemoryTracker()
                if objective == "midtrain":
                    midtrain(MidtrainConfig(model=vlm, manifest_uri=manifest, output_uri=f"{tmp}/mid", train=train),
                             tracker)
                else:
                    finetune(FinetuneConfig(model=vlm, output_uri=f"{tmp}/vla", train=train,
                                            robot=RobotDataConfig(sources=corpus.robot, heldout_fraction=0.0)),
                             tracker)
                row = {"objective": objective, "loader_workers": workers, **_measure(tracker, args.log_every)}
                print(row, flush=True)
                rows.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train.json").write_text(json.dumps({"args": vars(args), "torch_threads": torch.get_num_threads(),
                                                "rows": rows}, indent=1))
    print("\n| objective | DataLoader workers | samples/s | tokens/s | data-wait share |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['objective']} | {r['loader_workers']} | {r['samples_per_s']} | {r['tokens_per_s']} | "
              f"{r['data_wait_share']:.1%} |")
    return 0
