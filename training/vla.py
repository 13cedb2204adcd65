"""The VLA: a VLM with a small MLP action head on its last hidden state (the paper's head).

The head maps the pooled hidden state to a chunk of H actions of A dimensions: arm dimensions are regressed in
normalised units (Huber loss), the gripper dimension is a logit (binary cross-entropy). A saved VLA is a
directory that reloads on its own, with no pickle::

    vlm/                 the VLM and its processor (save_pretrained: safetensors)
    head.safetensors     the action head
    vla.json             head settings, chunk size, prompt
    action_stats.json    q01/q99 per dimension and the gripper index (training episodes only)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from core.location import Location
from estimator.backbones.hf_vlm import pool
from training.actions import ActionStats
from training.chat import make_encoder
from training.vlm import load_vlm, save_vlm, upload_dir

FORMAT_VERSION = 1
MODEL_INPUTS_SKIP = ("labels", "actions", "action_mask", "raw_actions")


@dataclass(frozen=True)
class HeadSpec:
    """Everything that shapes the head and its loss (``vla.json``)."""

    action_dim: int
    chunk_size: int
    gripper_index: int | None
    hidden_dim: int
    pooling: str
    huber_delta: float
    gripper_weight: float
    prompt: str
    max_length: int = 512


def model_inputs(batch: dict) -> dict:
    """The keys of a batch the model's forward takes (not targets, not stream bookkeeping)."""
    return {k: v for k, v in batch.items() if k not in MODEL_INPUTS_SKIP and not k.startswith("_")}


class VLA(nn.Module):
    """VLM + action head; ``forward`` returns [B, H, A] (normalised arm values, gripper logit)."""

    def __init__(self, vlm: nn.Module, processor: Any, spec: HeadSpec, stats: ActionStats) -> None:
        super().__init__()
        if stats.action_dim != spec.action_dim:
            raise ValueError(f"head.action_dim is {spec.action_dim} but the action statistics have "
                             f"{stats.action_dim} dimensions")
        self.vlm, self.processor, self.spec, self.stats = vlm, processor, spec, stats
        hidden = int(vlm.config.get_text_config().hidden_size)
        self.head = nn.Sequential(nn.Linear(hidden, spec.hidden_dim), nn.GELU(),
                                  nn.Linear(spec.hidden_dim, spec.chunk_size * spec.action_dim))
        out, inp = vlm.get_output_embeddings(), vlm.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            out.requires_grad_(False)  # the LM head is unused here (and DDP must not wait for its gradients)
        self.encoder = make_encoder(processor, max_length=spec.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: Any) -> torch.Tensor:
        extra = {"logits_to_keep": 1}  # only hidden states are needed: skip [B, T, vocab] logits
        out = self.vlm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                       return_dict=True, **extra, **inputs)
        pooled = pool(out.hidden_states[-1], attention_mask, self.spec.pooling)
        return self.head(pooled).view(-1, self.spec.chunk_size, self.spec.action_dim)

    def loss_terms(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-step loss [B, H]: mean Huber over the arm dimensions plus the weighted gripper BCE."""
        pred = pred.float()
        arm = torch.as_tensor(self.stats.arm, device=pred.device)
        loss = F.huber_loss(pred[..., arm], target[..., arm], delta=self.spec.huber_delta,
                            reduction="none").mean(-1) if len(arm) else pred.new_zeros(pred.shape[:2])
        if self.spec.gripper_index is not None:
            g = self.spec.gripper_index
            loss = loss + self.spec.gripper_weight * F.binary_cross_entropy_with_logits(
                pred[..., g], target[..., g], reduction="none")
        return loss

    def to_actions(self, pred: torch.Tensor) -> np.ndarray:
        """Raw outputs [..., H, A] -> actions in the dataset's units (gripper through its sigmoid)."""
        values = pred.detach().float().cpu().numpy().copy()
        if self.spec.gripper_index is not None:
            g = self.spec.gripper_index
            values[..., g] = 1.0 / (1.0 + np.exp(-values[..., g]))
        return self.stats.unnormalize(values)

    @torch.no_grad()
    def predict_action(self, image: Image.Image, instruction: str) -> np.ndarray:
        """Actions [H, A] in the dataset's units for one camera image and instruction."""
        device = next(self.parameters()).device
        sample = self.encoder.prompt(image.convert("RGB"), self.spec.prompt.format(instruction=instruction))
        batch = {k: v.to(device) for k, v in self.encoder.collate([sample]).items()}
        was_training = self.training
        self.eval()
        try:
            return self.to_actions(self(**batch))[0]
        finally:
            self.train(was_training)


def save_vla(vla: VLA, where: str | Location) -> None:
    """Write ``vla`` at ``where`` (directory or s3:// prefix); vla.json goes last: its presence means complete."""
    def write(path: str) -> None:
        save_vlm(vla.vlm, vla.processor, os.path.join(path, "vlm"))
        save_file({k: v.detach().cpu().contiguous() for k, v in vla.head.state_dict().items()},
                  os.path.join(path, "head.safetensors"))
        with open(os.path.join(path, "action_stats.json"), "w") as f:
            f.write(vla.stats.to_json())
        with open(os.path.join(path, "vla.json"), "w") as f:
            json.dump({"format_version": FORMAT_VERSION, **asdict(vla.spec)}, f, indent=1)

    where = Location.of(where)
    if where.protocol == "file":
        os.makedirs(where.path, exist_ok=True)
        write(where.path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp)
        upload_dir(tmp, where, last="vla.json")


def load_vla(where: str | Location) -> VLA:
    """A VLA saved by ``save_vla``, from its directory (or prefix) alone."""
    where = Location.of(where)
    uri = where.uri
    if not where.join("vla.json").exists():
        raise ValueError(f"vla {uri!r}: no saved VLA there (no vla.json)")
    local = where.local_copy()
    with open(os.path.join(local, "vla.json")) as f:
        spec = json.load(f)
    if spec.pop("format_version") != FORMAT_VERSION:
        raise ValueError(f"vla {uri!r}: unsupported format version")
    with open(os.path.join(local, "action_stats.json")) as f:
        stats = ActionStats.from_json(f.read())
    vlm, processor = load_vlm(os.path.join(local, "vlm"), field="vla")
    vla = VLA(vlm, processor, HeadSpec(**spec), stats)
    vla.head.load_state_dict(load_file(os.path.join(local, "head.safetensors")))
    return vla
