"""Re-curation: a first ``curate`` run on a synthetic corpus (embeds every shard) vs a second run on the same,
unchanged shards (every embedding comes from the cache), in one process, one after the other.

Both runs are the whole Prefect flow (preflight with the backbone load, fit, score, select, manifest, MLflow
record); Prefect's embedded API and the MLflow DB (under data/bench/) are set up before timing. The steps' seconds
are the product's own (``CurateReport.timings``: each executor job's wall time and the steps that are none).
``--rounds`` repeats the pair in fresh folders (a cold cache each round); the figure is the cold / warm ratio of
each round, its median and spread, with the load average at each round's start: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow

import flows.curate as curate_flow
from bench.models import bench_backbone
from core.settings import MlflowConfig
from flows.params import CurateParams
from synth import SynthConfig, generate_corpus
from tasks.ray_config import RayConfig

OUT = Path("bench/out")
DATA = Path("data/bench")


@flow(name="bench-warm-up")
def _warm_prefect() -> None:
    """Starts Prefect's embedded API so neither timed run pays for it."""


def _mlflow_config() -> MlflowConfig:
    """Runs tracked in data/bench/ (not the working directory); the DB is created here, before timing."""
    config = MlflowConfig(tracking_uri=f"sqlite:///{DATA}/mlflow.db", experiment="emt-bench-recurate")
    mlflow.set_tracking_uri(config.resolved_uri())
    if mlflow.get_experiment_by_name(config.experiment) is None:
        mlflow.create_experiment(config.experiment, artifact_location=(DATA / "mlruns").resolve().as_uri())
    return config


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench recurate")
    ap.add_argument("--samples-per-source", type=int, default=2000, help="pool samples in each of 4 sources")
    ap.add_argument("--shard-size", type=int, default=250, help="keep it no multiple of the embed batch (64)")
    ap.add_argument("--model", default="tiny", help="tiny (the demo's) or an open_clip arch (seeded random weights)")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--keep", action="store_true", help="keep the runs and the cache under data/bench/")
    ap.add_argument("--rounds", type=int, default=3, help="cold + warm pairs, each in fresh folders")
    ap.add_argument("--embed-actors", type=int, default=1, help="ray.embed_actors (each gets the CPUs' share)")
    args = ap.parse_args(argv)

    DATA.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(samples_per_source=args.samples_per_source, shard_size=args.shard_size, workers=2)
    info = generate_corpus(str(DATA / f"corpus-{args.samples_per_source}-{args.shard_size}"), cfg)
    spec = bench_backbone(args.model)
    _warm_prefect()
    tracking = _mlflow_config()
    rows = []
    for r in range(args.rounds):
        out = DATA / f"recurate-{uuid.uuid4().hex[:8]}"  # a cold cache each round
        load = round(os.getloadavg()[0], 2)
        try:
            for run in ("first", "second"):
                params = CurateParams(pool=info.pool, robot=info.robot, backbone=spec, fraction=args.fraction,
                                      output_uri=str(out / "runs"), run_name=run, mlflow=tracking,
                                      ray=RayConfig(embed_actors=args.embed_actors))
                t0 = time.perf_counter()
                report = curate_flow.curate(params)
                wall = time.perf_counter() - t0
                rows.append({"round": r, "run": run, "load_1min": load, "wall_s": round(wall, 2),
                             "flow_s": report.seconds, "shards_embedded": report.shards_embedded,
                             "shards_cached": report.shards_cached, "pool_samples": report.pool_samples,
                             "selected": report.selected,
                             **{step: round(seconds, 2) for step, seconds in report.timings.items()}})
                print(json.dumps(rows[-1]))
        finally:
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    table = pd.DataFrame(rows).fillna(0.0)
    first = table[table["run"] == "first"].set_index("round")
    second = table[table["run"] == "second"].set_index("round")
    per_round = {"wall first/second": first["wall_s"] / second["wall_s"],
                 "first: embed step share of wall": first["embed_s"] / first["wall_s"],
                 "second: fit + report share of wall": (second["fit_s"] + second["report_s"]) / second["wall_s"]}
    ratios = {k: {"median": round(float(v.median()), 2), "min": round(float(v.min()), 2),
                  "max": round(float(v.max()), 2)} for k, v in per_round.items()}
    print("\n" + table.set_index(["round", "run"]).T.to_string() + "\n\n"
          + "\n".join(f"{k}: {v}" for k, v in ratios.items())
          + f"\nload average (1 min) per round: {first['load_1min'].tolist()}")
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "rows": rows, "ratios": ratios}
    (OUT / f"recurate-{args.model}.json").write_text(json.dumps(result, indent=1))
    return 0
