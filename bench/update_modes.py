"""Held-out action loss of the VLA after mid-training + fine-tuning the demo's tiny Llava under each update mode
(full parameters, vision tower + lower half of the LLM frozen, LoRA), at one budget and the same seeds.

The data is the demo corpus: mid-training on every pool sample (as ``bench train`` does), fine-tuning on its two
robot datasets with a quarter of the episodes held out. The mode applies to both stages (the action head is
always trained). Each row: mean and standard deviation over the seeds of the final held-out loss and arm L1.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.train_throughput import OUT, training_inputs
from training.config import FinetuneConfig, LoraSpec, MidtrainConfig, RobotDataConfig, TrainConfig, UpdateFreeze
from training.recipes import finetune, midtrain

MODES = {
    "full": {},
    "frozen_lower_half": {"freeze": UpdateFreeze(vision=True, llm_layers="half")},
    "lora_r8": {"lora": LoraSpec(rank=8, alpha=16, dropout=0.0)},
}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench modes")
    ap.add_argument("--midtrain-steps", type=int, default=60)
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    rows = []
    with training_inputs() as (tmp, corpus, vlm, manifest):
        for mode, update in MODES.items():
            finals = []
            for seed in args.seeds:
                train = {"lr": args.lr, "batch_size": 8, "shuffle_buffer": 64, "seed": seed, **update}
                mid = f"{tmp}/{mode}-{seed}/vlm"
                midtrain(MidtrainConfig(model=vlm, manifest_uri=manifest, output_uri=mid,
                                        train=TrainConfig(steps=args.midtrain_steps, **train)))
                result = finetune(FinetuneConfig(
                    model=mid, output_uri=f"{tmp}/{mode}-{seed}/vla",
                    robot=RobotDataConfig(sources=corpus.robot, heldout_fraction=0.25, split_seed=0),
                    train=TrainConfig(steps=args.finetune_steps, **train)))
                finals.append(result.eval)
            row = {"mode": mode, "seeds": len(finals)}
            for key in ("loss", "l1/arm"):
                values = [f[key] for f in finals]
                row[key] = round(statistics.mean(values), 4)
                row[f"{key} sd"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
            rows.append(row)
            print(row, flush=True)
    print("| update mode | seeds | held-out loss (mean ± sd) | arm L1 (mean ± sd) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seeds']} | {r['loss']:.4f} ± {r['loss sd']:.4f} | "
              f"{r['l1/arm']:.4f} ± {r['l1/arm sd']:.4f} |")
    Path(OUT).mkdir(parents=True, exist_ok=True)
    (Path(OUT) / "update_modes.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
