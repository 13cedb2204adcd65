"""Backbones for the benchmarks: real open_clip architectures with seeded random weights, saved once as an open_clip
model directory, so every load (driver, each Ray actor, a second run) has the same weights and fingerprint.

``BackboneSpec(kind="open_clip", model="ViT-B-32")`` with no ``pretrained`` draws fresh random weights at each
load, so its fingerprint changes from load to load and the embedding cache never hits.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from estimator.backbones.spec import BackboneSpec
from estimator.backbones.tiny import save_tiny_backbone

MODELS = Path("data/bench/models")


def bench_backbone(model: str, *, seed: int = 0) -> BackboneSpec:
    """``tiny`` (the demo's tiny open_clip) or an open_clip architecture with seeded random weights; image tower."""
    if model == "tiny":
        spec = save_tiny_backbone("open_clip", str(MODELS / "tiny-open_clip"), seed=seed)
        return spec.model_copy(update={"modality": "image"})
    dest = MODELS.resolve() / f"{model}-random-{seed}"  # absolute: Ray actors load it too
    config = dest / "open_clip_config.json"
    if not config.exists():
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise ValueError(f"unknown open_clip architecture {model!r}")
        dest.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = open_clip.create_model(model, pretrained=None)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(dest / "open_clip_model.safetensors"))
        config.write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=1))  # last: marks it done
    return BackboneSpec(kind="open_clip", model=str(dest), modality="image")
