"""How large a VLM, how many expert episodes and how many steps the toy world needs before a VLA fine-tuned on the
robot data alone (the ablation's ``none`` arm) succeeds in closed loop at all: until it does, mid-training has no
success rate to improve, and the curation's effect cannot show there.

Each row: a tiny random Llava of the given width / layers / input size, fine-tuned on ``--episodes`` expert
episodes (a quarter held out) for ``--steps`` steps, then rolled out ``--rollouts`` times from unseen seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from synth.lerobot import CAMERA
from synth.toyworld import TabletopEnv, write_toyworld_dataset
from training.closed_loop import closed_loop_eval
from training.config import ClosedLoopConfig, FinetuneConfig, RobotDataConfig, TrainConfig, VLAHeadConfig
from training.metrics import MemoryTracker
from training.recipes import finetune
from training.vla import load_vla
from training.vlm import save_tiny_vlm

OUT = Path(__file__).parent / "out"


def _size(text: str) -> dict[str, int]:
    """``WIDTHxLAYERS@PIXELS``, e.g. ``32x2@32`` (the demo's tiny VLM)."""
    shape, pixels = text.split("@")
    width, layers = shape.split("x")
    return {"width": int(width), "layers": int(layers), "image_size": int(pixels)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench toyworld")
    ap.add_argument("--sizes", nargs="+", type=_size, default=[_size("32x2@32"), _size("128x4@64")])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rollouts", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=64, help="the camera's size (the robot data's)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/toyworld"
        write_toyworld_dataset(data, range(args.episodes), size=args.image_size)
        robot = RobotDataConfig(sources=[{"name": "toyworld", "format": "lerobot", "uri": data,
                                          "image_key": CAMERA}], heldout_fraction=0.25, split_seed=0)
        for size in args.sizes:
            name = f"{size['width']}x{size['layers']}@{size['image_size']}"
            vlm = save_tiny_vlm(f"{tmp}/vlm-{name}", seed=0, **size)
            tracker, start = MemoryTracker(), time.perf_counter()
            result = finetune(FinetuneConfig(
                model=vlm, output_uri=f"{tmp}/vla-{name}", robot=robot, head=VLAHeadConfig(hidden_dim=128),
                train=TrainConfig(steps=args.steps, lr=args.lr, batch_size=8, shuffle_buffer=256,
                                  log_every=max(1, args.steps // 10))), tracker)
            train_s = time.perf_counter() - start
            loss = tracker.series("loss")
            rolled = closed_loop_eval(f"{tmp}/vla-{name}", TabletopEnv, ClosedLoopConfig(
                episodes=args.rollouts, image_size=args.image_size, gif_episodes=0))
            params = sum(int(p.numel()) for p in load_vla(f"{tmp}/vla-{name}").vlm.parameters())
            row = {"vlm": name, "params": params, "episodes": args.episodes, "steps": args.steps,
                   "train loss first": round(loss[0][1], 3), "train loss last": round(loss[-1][1], 3),
                   "held-out loss": round(result.eval["loss"], 3),
                   "gripper accuracy": round(result.eval.get("gripper_accuracy", float("nan")), 3),
                   "arm L1": round(result.eval.get("l1/arm", float("nan")), 3), "successes": rolled.successes,
                   "rollouts": rolled.episodes, "low": round(rolled.low, 3), "high": round(rolled.high, 3),
                   "train s": round(train_s, 1)}
            rows.append(row)
            print(row, flush=True)
    print("| VLM (width x layers @ px) | episodes | steps | train loss first → last | held-out loss | gripper accuracy "
          "| arm L1 | success (Wilson) | train s |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['vlm']} | {r['episodes']} | {r['steps']} | {r['train loss first']} → {r['train loss last']} | "
              f"{r['held-out loss']} | {r['gripper accuracy']} | {r['arm L1']} | "
              f"{r['successes']}/{r['rollouts']} [{r['low']}, {r['high']}] | {r['train s']} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "toyworld_probe.json").write_text(json.dumps({"args": {**vars(args)}, "rows": rows}, indent=1))
    return 0
