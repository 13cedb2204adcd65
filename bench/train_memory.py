"""Memory of one mid-training step with a real-sized vocabulary: the product's loss (logits only at the answer
positions, ``training.objectives.sft_loss``) against the plain one a user would write (logits for every position,
cross-entropy in float32), on a tiny Qwen2-VL-shaped model whose vocabulary is Qwen's 151,936 tokens.

Each variant runs in a fresh process; the figure is its peak resident memory during forward + backward minus its
resident memory just before (model, optimizer-free, and batch already built).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path("bench/out")
VOCAB = 151_936


def _step(variant: str, model_dir: str, batch_size: int, prompt: int, answer: int) -> dict[str, float]:
    import resource

    import psutil
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForImageTextToText

    from training.chat import IGNORE
    from training.objectives import sft_loss

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).train()
    ids = torch.randint(300, VOCAB, (batch_size, prompt + answer))
    labels = ids.clone()
    labels[:, :prompt] = IGNORE
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    before = psutil.Process().memory_info().rss
    if variant == "answer_logits":
        loss, count = sft_loss(model, batch)
    else:
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
                               reduction="sum")
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": variant, "step_mb": round((peak - before) / 2**20, 1), "loss": round(loss.item(), 3)}


def _model(path: str) -> None:
    """A two-layer Qwen2-VL text stack (hidden 64) with Qwen's vocabulary size."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = {"model_type": "qwen2_vl_text", "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
            "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}}
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "patch_size": 8}
    Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision)).save_pretrained(path)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench train-memory")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=480, help="prompt tokens (image + question), unlabelled")
    ap.add_argument("--answer", type=int, default=32, help="answer tokens, labelled")
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_step(args.child[0], args.child[1], args.batch_size, args.prompt, args.answer)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _model(tmp)
        for variant in ("all_logits", "answer_logits"):
            shape = ["--batch-size", str(args.batch_size), "--prompt", str(args.prompt), "--answer", str(args.answer)]
            out = subprocess.run([sys.executable, "-m", "bench", "train-memory", *shape, "--child", variant, tmp],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    tokens = args.batch_size * (args.prompt + args.answer)
    print(f"one step, batch {args.batch_size} x {args.prompt + args.answer} tokens ({tokens}), vocabulary {VOCAB}")
    for row in rows:
        print(f"  {row['variant']:>14}: {row['step_mb']:>8.1f} MB above the loaded model (loss {row['loss']})")
    print(f"  ratio all / answer: {rows[0]['step_mb'] / rows[1]['step_mb']:.1f}x; the losses agree: "
          f"{abs(rows[0]['loss'] - rows[1]['loss']) < 1e-2 * abs(rows[0]['loss'])}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_memory.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0
