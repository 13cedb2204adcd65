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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from core.location import Location


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


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints of one run, at ``where`` (see the module docstring for the layout)."""

    where: Location

    def latest(self) -> Location | None:
        """The newest complete checkpoint directory, or None."""
        marker = self.where.join("latest.json")
        if not marker.exists():
            return None
        return self.where.join(json.loads(marker.read_bytes())["dir"])

    def logged_step(self) -> int:
        """The last step the run sent to its tracker (0: none recorded). A resume goes back to the last
        checkpoint, which may be older: the steps up to this one are not sent again."""
        marker = self.where.join("logged.json")
        return int(json.loads(marker.read_bytes())["step"]) if marker.exists() else 0

    def mark_logged(self, step: int) -> None:
        """Record that ``step``'s metrics reached the tracker (one small object, replaced in place)."""
        self.where.join("logged.json").publish_bytes(json.dumps({"step": step}).encode())

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
             rng: list[dict[str, Any]]) -> Location:
        """Write step ``step``'s checkpoint (``rng``: one state per rank); return its directory."""
        name = f"step-{step:08d}"
        target = self.where.join(name)
        fs, root = target.fs, target.path
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
        self.where.join("latest.json").publish_bytes(json.dumps({"step": step, "dir": name}).encode())
        return target


def read_state(checkpoint: Location) -> dict[str, Any]:
    """A checkpoint's state.json (cheap: check it before loading weights)."""
    return json.loads(checkpoint.join("state.json").read_bytes())


def load_checkpoint(checkpoint: Location, model: nn.Module,
                    optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load weights and optimizer state from ``checkpoint``; return (state, per-rank RNG states)."""
    fs, root = checkpoint.fs, checkpoint.path
    with tempfile.TemporaryDirectory() as tmp:
        fs.get_file(f"{root.rstrip('/')}/model.safetensors", os.path.join(tmp, "model.safetensors"))
        missing, unexpected = load_model(model, os.path.join(tmp, "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {checkpoint}: weights do not fit the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    with fs.open(f"{root.rstrip('/')}/optimizer.pt", "rb") as f:
        blob = torch.load(io.BytesIO(f.read()), weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    state = read_state(checkpoint)
    rng = [{**t, **p} for t, p in zip(blob["rng"], state.pop("rng"), strict=True)]
    return state, rng
