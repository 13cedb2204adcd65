"""What every frozen backbone offers: one pooled feature vector per (image, text) sample, and a fingerprint.

The fingerprint names everything that changes the vectors (model, weights, preprocessing, pooling, dtype), so an
embedding cache keyed by it can never serve vectors of another model.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from core.settings import Settings


class BackboneSpec(Settings):
    """Which frozen model embeds the samples."""

    kind: Literal["open_clip", "hf_clip", "hf_vlm"] = Field(
        description="open_clip: an open_clip model; hf_clip: a transformers CLIP/SigLIP model; "
        "hf_vlm: a transformers vision-language model (last hidden state)."
    )
    model: str = Field(
        description="open_clip: architecture name (ViT-B-32) or a local/S3 directory holding "
        "open_clip_config.json + weights; hf_*: hub id, local directory or S3 prefix (from_pretrained)."
    )
    pretrained: str | None = Field(
        None,
        description="open_clip only: weights tag (laion2b_s34b_b79k), local file or S3 URI; None = random.",
    )
    modality: Literal["image", "text", "image+text"] = Field(
        "image+text", description="CLIP kinds: which towers form the vector (image+text concatenates both)."
    )
    pooling: Literal["mean", "last"] = Field(
        "mean",
        description="hf_vlm: mean over valid tokens of the last hidden state, or the last valid token.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present.")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.resolved_device().type == "cuda" else torch.float32
        return getattr(torch, self.dtype)


class Backbone(ABC):
    """A frozen feature extractor. Subclasses load the model in ``__init__`` (once per worker)."""

    spec: BackboneSpec
    embed_dim: int

    @abstractmethod
    def embed(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Float32 array [len(images), embed_dim]; row i is the vector of (images[i], texts[i])."""

    @abstractmethod
    def fingerprint_parts(self) -> dict:
        """What identifies the vectors beyond kind/modality/pooling/dtype: architecture, weights hash,
        preprocessing, embed_dim. Where the weights came from (path, S3, hub) is left out on purpose: the same
        weights loaded from anywhere give the same fingerprint."""

    @property
    def fingerprint(self) -> str:
        parts = {
            "spec": self.spec.model_dump(exclude={"device", "model", "pretrained"}),
            "dtype": str(self.spec.resolved_dtype()),
            **self.fingerprint_parts(),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer, in name order: the same weights give the same hash."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
