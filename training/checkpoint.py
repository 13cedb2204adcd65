"""Checkpoints on any URI (local or s3://). One directory per step::

    CKPT/step-00000100/model.safetensors   model weights
    CKPT/step-00000100/optimizer.pt        AdamW state and the torch RNG states (tensors only: weights_only load)
    CKPT/step-00000100/state.json          step, loss history, global data position, skipped counts,
                                           python/numpy RNG, model identity
    CKPT/latest.json                       {"step": 100, "dir": "step-00000100"}, published last
    CKPT/logged.json                       {"step": 104}: the last step whose metrics reached the tracker

The learning rate is a pure function of the step, so there is no scheduler state to keep. ``latest.json`` is
replaced only after a step's files are all written: a crash mid-save leaves the previous checkpoint in force.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from core.settings import StorageConfig
from core.storage import exists, filesystem, join, publish_bytes, read_bytes


def latest_checkpoint(uri: str, storage: StorageConfig | None = None) -> str | None:
    """The newest complete checkpoint directory under ``uri``, or None."""
    marker = join(uri, "latest.json")
    if not exists(marker, storage):
        return None
    return join(uri, json.loads(read_bytes(marker, storage))["dir"])


def logged_step(uri: str, storage: StorageConfig | None = None) -> int:
    """The last step a run with checkpoints under ``uri`` sent to its tracker (0: none recorded). A resume goes
    back to the last checkpoint, which may be older: the steps up to this one are not sent again."""
    marker = join(uri, "logged.json")
    return int(json.loads(read_bytes(marker, storage))["step"]) if exists(marker, storage) else 0


def mark_logged(uri: str, step: int, storage: StorageConfig | None = None) -> None:
    """Record that ``step``'s metrics reached the tracker (one small object, replaced in place)."""
    publish_bytes(join(uri, "logged.json"), json.dumps({"step": step}).encode(), storage)


def rng_state() -> dict[str, Any]:
    """This process's RNG states: torch (CPU and CUDA) as tensors, python and numpy as JSON-able lists."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [version, list(mt), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(uri: str, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    rng: list[dict[str, Any]], storage: StorageConfig | None = None) -> str:
    """Write step ``step``'s checkpoint under ``uri`` (``rng``: one state per rank); return its directory."""
    name = f"step-{step:08d}"
    target = join(uri, name)
    fs, root = filesystem(target, storage)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, os.path.join(tmp, "model.safetensors"))  # handles tied weights
        torch.save({"optimizer": optimizer.state_dict(),
                    "rng": [{"torch": r["torch"], "cuda": r["cuda"]} for r in rng]},
                   os.path.join(tmp, "optimizer.pt"))
        python_rng = [{"python": r["python"], "numpy": r["numpy"]} for r in rng]
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({**state, "step": step, "rng": python_rng}, f)
        fs.makedirs(root, exist_ok=True)
        for file in sorted(os.listdir(tmp)):
            fs.put_file(os.path.join(tmp, file), f"{root.rstrip('/')}/{file}")
    publish_bytes(join(uri, "latest.json"), json.dumps({"step": step, "dir": name}).encode(), storage)
    return target


def read_state(path: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """A checkpoint's state.json (cheap: check it before loading weights)."""
    return json.loads(read_bytes(join(path, "state.json"), storage))


def load_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    storage: StorageConfig | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load weights and optimizer state from ``path``; return (state, per-rank RNG states)."""
    fs, root = filesystem(path, storage)
    with tempfile.TemporaryDirectory() as tmp:
        fs.get_file(f"{root.rstrip('/')}/model.safetensors", os.path.join(tmp, "model.safetensors"))
        missing, unexpected = load_model(model, os.path.join(tmp, "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {path}: weights do not fit the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    with fs.open(f"{root.rstrip('/')}/optimizer.pt", "rb") as f:
        blob = torch.load(io.BytesIO(f.read()), weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    state = read_state(path, storage)
    rng = [{**t, **p} for t, p in zip(blob["rng"], state.pop("rng"), strict=True)]
    return state, rng
