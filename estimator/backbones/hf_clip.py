"""transformers two-tower models (CLIP, SigLIP and kin) loaded with ``from_pretrained`` from a hub id, a local
directory or an S3 prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from core.settings import StorageConfig
from estimator.backbones.base import Backbone, BackboneSpec
from estimator.backbones.common import (
    as_tensor,
    localize,
    looks_like_path,
    two_tower_vectors,
)


def model_source(spec: BackboneSpec, storage: StorageConfig | None, cache_dir: str | Path | None) -> str:
    """What ``from_pretrained`` gets: a local directory (S3 prefixes copied first) or the hub id as given."""
    return localize(spec.model, storage, cache_dir) if looks_like_path(spec.model) else spec.model


class HFClipBackbone(Backbone):
    """A transformers CLIP-like model; the vector is the L2-normalised image and/or text embedding."""

    def __init__(self, spec: BackboneSpec, storage: StorageConfig | None = None, *,
                 cache_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.device, self.dtype = spec.resolved_device(), spec.resolved_dtype()
        source = model_source(spec, storage, cache_dir)
        self.files_spec = spec.model_copy(update={"model": source, "dtype": str(self.dtype).removeprefix("torch.")})
        self.processor = AutoProcessor.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=self.dtype)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ValueError(f"hf_clip model {spec.model!r} is a {type(model).__name__}, which has no "
                             "get_image_features/get_text_features; use kind hf_vlm for vision-language models")
        self.model = model.to(self.device).eval().requires_grad_(False)
        text_cfg = getattr(model.config, "text_config", model.config)
        # SigLIP was trained on texts padded to the full length; CLIP pools on EOS and pads to the batch.
        self.text_kwargs: dict[str, Any] = {
            "padding": "max_length" if "siglip" in model.config.model_type else True,
            "truncation": True,
            "max_length": getattr(text_cfg, "max_position_embeddings", None),
        }
        # The projection width differs between families (projection_dim, head sizes): ask the model once.
        probe = self._encode_images([Image.new("RGB", (8, 8))])
        dim = int(probe.shape[-1])
        self.embed_dim = 2 * dim if spec.modality == "image+text" else dim

    def embed(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        return two_tower_vectors(self.spec.modality, images, texts, self._encode_images, self._encode_texts,
                                 self.embed_dim)

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor.image_processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            pixels = inputs["pixel_values"].to(self.device, self.dtype)
            return as_tensor(self.model.get_image_features(pixel_values=pixels))

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor.tokenizer(texts, return_tensors="pt", **self.text_kwargs).to(self.device)
        return as_tensor(self.model.get_text_features(**inputs))
