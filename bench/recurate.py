"""Re-curation: a first ``curate`` run on a synthetic corpus (embeds every shard) vs a second run on the same,
unchanged shards (every embedding comes from the cache), in one process, one after the other.

Both runs are the whole Prefect flow (preflight with the backbone load, fit, score, select, manifest); Prefect's
embedded API is started before timing by a no-op flow. Each Prefect task call is timed, and the Ray session
(local Ray start + embed task + shutdown) apart from the embed task itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow

import flows.curate as curate_flow
from estimator.backbones import BackboneSpec
from estimator.backbones.tiny import save_tiny_backbone
from flows.params import CurateParams
from tasks import curate_tasks
from tasks.synth import SynthConfig, generate_corpus

OUT = Path("bench/out")
DATA = Path("data/bench")
TASKS = ("preflight", "embed", "fit", "score_pool", "choose", "write_manifest")


@flow(name="bench-warm-up")
def _warm_up() -> None:
    """Starts Prefect's embedded API so neither timed run pays for it."""


@contextlib.contextmanager
def _timed_steps(times: dict[str, float]) -> Iterator[None]:
    """Time every curate task call and the Ray session, by wrapping what the flow looks up at call time."""
    originals: dict[tuple[Any, str], Any] = {(curate_tasks, n): getattr(curate_tasks, n) for n in TASKS}
    originals[(curate_flow, "ray_session")] = curate_flow.ray_session

    def timed(name: str, fn: Callable) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] += time.perf_counter() - t0

        return call

    @contextlib.contextmanager
    def ray_session(address: str | None) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            with originals[(curate_flow, "ray_session")](address):
                yield
        finally:
            times["ray_session"] += time.perf_counter() - t0

    for name in TASKS:
        setattr(curate_tasks, name, timed(name, originals[(curate_tasks, name)]))
    curate_flow.ray_session = ray_session
    try:
        yield
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench recurate")
    ap.add_argument("--samples-per-source", type=int, default=2000, help="pool samples in each of 4 sources")
    ap.add_argument("--shard-size", type=int, default=250, help="keep it no multiple of the embed batch (64)")
    ap.add_argument("--model", default="tiny", help="tiny (demo's tiny open_clip) or an open_clip arch, random")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--keep", action="store_true", help="keep the runs and the cache under data/bench/")
    args = ap.parse_args(argv)

    DATA.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(samples_per_source=args.samples_per_source, shard_size=args.shard_size, workers=2)
    info = generate_corpus(str(DATA / f"corpus-{args.samples_per_source}-{args.shard_size}"), cfg)
    if args.model == "tiny":
        spec = save_tiny_backbone("open_clip", str(DATA / "models" / "tiny-open_clip"), seed=0)
    else:
        spec = BackboneSpec(kind="open_clip", model=args.model)
    spec = spec.model_copy(update={"modality": "image"})
    out = DATA / f"recurate-{uuid.uuid4().hex[:8]}"
    _warm_up()
    rows = []
    try:
        for run in ("first", "second"):
            params = CurateParams(pool=info.pool, robot=info.robot, backbone=spec, fraction=args.fraction,
                                  output_uri=str(out / "runs"), run_name=run)
            times: dict[str, float] = defaultdict(float)
            with _timed_steps(times):
                t0 = time.perf_counter()
                report = curate_flow.curate(params)
                wall = time.perf_counter() - t0
            rows.append({"run": run, "wall_s": round(wall, 2), "flow_s": report.seconds,
                         "shards_embedded": report.shards_embedded, "shards_cached": report.shards_cached,
                         "pool_samples": report.pool_samples, "selected": report.selected,
                         **{f"{k}_s": round(v, 2) for k, v in times.items()}})
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    table = pd.DataFrame(rows).set_index("run").fillna(0.0)
    first, second = table.loc["first"], table.loc["second"]
    ratios = {"wall first/second": round(first["wall_s"] / second["wall_s"], 1),
              "flow first/second": round(first["flow_s"] / second["flow_s"], 1),
              "first: embed task share of wall": round(first["embed_s"] / first["wall_s"], 2)}
    print("\n" + table.T.to_string() + "\n\n" + "\n".join(f"{k}: {v}" for k, v in ratios.items()))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "recurate.json").write_text(json.dumps({"args": vars(args), "rows": rows, "ratios": ratios}, indent=1))
    return 0
