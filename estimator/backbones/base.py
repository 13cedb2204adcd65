"""What every frozen backbone offers: one pooled feature vector per (image, text) sample, and a fingerprint.

A backbone is two halves. Its ``preprocessor`` (CPU work, no weights: resize, crop, tokenise) turns decoded images
and texts into a ``Prepared`` batch of plain arrays (uint8 pixels where the model allows), which pickles cheaply
and can run in a CPU task anywhere on the cluster; ``forward`` moves such a batch to the model's device and runs
the model. ``embed`` is the two in one process.

The fingerprint names everything that changes the vectors (model, weights, preprocessing, pooling, dtype), so an
embedding cache keyed by it can never serve vectors of another model; ``fingerprint.describe`` computes it from
the model's files without loading it.
"""

from __future__ import annotations

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
    decode: Literal["full", "reduced"] = Field(
        "full",
        description="reduced: JPEGs at least twice the model's input size are decoded at 1/2, 1/4 or 1/8 scale "
        "(libjpeg DCT scaling, Pillow's draft) before the resize: ~1.7x fewer CPU-seconds per large JPEG, slightly "
        "different pixels, so a different fingerprint. Other formats decode in full either way.",
    )
    pooling: Literal["mean", "last"] = Field(
        "mean",
        description="hf_vlm: mean over valid tokens of the last hidden state, or the last valid token.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPU workers, float32 on CPU workers."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA for workers that declare a GPU, else CPU."
    )

    def placed(self, *, gpu: bool) -> BackboneSpec:
        """This spec with device and dtype decided by the workers' declared resources, never by the machine
        that asks (a CPU driver planning for GPU actors must name the dtype they will embed in)."""
        device = self.device if self.device != "auto" else ("cuda" if gpu else "cpu")
        dtype = self.dtype if self.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
        return self.model_copy(update={"device": device, "dtype": dtype})

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.resolved_device().type == "cuda" else torch.float32
        return getattr(torch, self.dtype)


Prepared = dict[str, np.ndarray]  # one forward pass's inputs, as arrays that cross process boundaries cheaply


class Preprocessor(ABC):
    """The CPU half of a backbone: picklable, holds no weights, so CPU tasks can run it beside the model.
    ``draft_size``: decode JPEGs reduced to no less than this many pixels a side (None = in full)."""

    draft_size: int | None = None

    @abstractmethod
    def __call__(self, images: list[Image.Image], texts: list[str]) -> Prepared:
        """Model inputs for (images[i], texts[i]); every array's first axis is the sample."""


class Backbone(ABC):
    """A frozen feature extractor. Subclasses load the model in ``__init__`` (once per worker) and set
    ``files_spec`` (the spec pointing at the files actually loaded, in the dtype actually used) and
    ``preprocessor``."""

    spec: BackboneSpec
    files_spec: BackboneSpec
    embed_dim: int
    preprocessor: Preprocessor
    _fingerprint: str | None = None

    @abstractmethod
    def forward(self, batch: Prepared) -> np.ndarray:
        """Float32 array [n, embed_dim] for a batch the ``preprocessor`` made of n samples."""

    def embed(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Float32 array [len(images), embed_dim]; row i is the vector of (images[i], texts[i])."""
        return self.forward(self.preprocessor(images, texts))

    @property
    def fingerprint(self) -> str:
        """The fingerprint of what was loaded, from its files (``fingerprint.describe``): equal to the one a
        driver computes for the same files and placement without loading anything."""
        if self._fingerprint is None:  # hashing streams the weights once: do it once
            from estimator.backbones.fingerprint import describe

            self._fingerprint = describe(self.files_spec).fingerprint
        return self._fingerprint
