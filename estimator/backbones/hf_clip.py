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

from core.model_files import localize, looks_like_path
from core.settings import StorageConfig
from estimator.backbones.backbone import Backbone, Prepared, Preprocessor
from estimator.backbones.spec import BackboneSpec
from estimator.backbones.tensors import (
    as_tensor,
    check_pairs,
    draft_size,
    resolved_device,
    resolved_dtype,
    rgb,
    samples_in,
    tensor,
    two_tower_vectors,
)


def model_source(spec: BackboneSpec, storage: StorageConfig | None, cache_dir: str | Path | None) -> str:
    """What ``from_pretrained`` gets: a local directory (S3 prefixes copied first) or the hub id as given."""
    return localize(spec.model, storage, cache_dir) if looks_like_path(spec.model) else spec.model


class HFClipPreprocessor(Preprocessor):
    """The model's processor: pixel values (float32, as the processor makes them) and padded token ids."""

    def __init__(self, processor: Any, text_kwargs: dict[str, Any], modality: str) -> None:
        self.processor, self.text_kwargs, self.modality = processor, text_kwargs, modality

    def __call__(self, images: list[Image.Image], texts: list[str]) -> Prepared:
        check_pairs(images, texts, self.modality)
        out: Prepared = {}
        if "image" in self.modality and images:
            out["pixel_values"] = self.processor.image_processor(images=rgb(images), return_tensors="pt")[
                "pixel_values"].numpy()
        if "text" in self.modality and texts:
            tokens = self.processor.tokenizer([str(t) for t in texts], return_tensors="pt", **self.text_kwargs)
            out |= {f"text.{k}": v.numpy() for k, v in tokens.items()}
        return out


class HFClipBackbone(Backbone):
    """A transformers CLIP-like model; the vector is the L2-normalised image and/or text embedding."""

    def __init__(self, spec: BackboneSpec, storage: StorageConfig | None = None, *,
                 cache_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.device, self.dtype = resolved_device(spec), resolved_dtype(spec)
        source = model_source(spec, storage, cache_dir)
        self.files_spec = spec.model_copy(update={"model": source, "dtype": str(self.dtype).removeprefix("torch.")})
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=self.dtype)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ValueError(f"hf_clip model {spec.model!r} is a {type(model).__name__}, which has no "
                             "get_image_features/get_text_features; use kind hf_vlm for vision-language models")
        self.model = model.to(self.device).eval().requires_grad_(False)
        text_cfg = getattr(model.config, "text_config", model.config)
        # SigLIP was trained on texts padded to the full length; CLIP pools on EOS and pads to the batch.
        text_kwargs: dict[str, Any] = {
            "padding": "max_length" if "siglip" in model.config.model_type else True,
            "truncation": True,
            "max_length": getattr(text_cfg, "max_position_embeddings", None),
        }
        self.preprocessor = HFClipPreprocessor(processor, text_kwargs, spec.modality)
        self.preprocessor.draft_size = draft_size(spec.decode, model.config.vision_config.image_size)
        # The projection width differs between families (projection_dim, head sizes): ask the model once.
        probe = HFClipPreprocessor(processor, text_kwargs, "image")([Image.new("RGB", (8, 8))], [""])
        with torch.inference_mode():
            dim = int(self._image_features(probe).shape[-1])
        self.embed_dim = 2 * dim if spec.modality == "image+text" else dim

    def forward(self, batch: Prepared) -> np.ndarray:
        return two_tower_vectors(self.spec.modality, samples_in(batch), lambda: self._image_features(batch),
                                 lambda: self._text_features(batch), self.embed_dim)

    def _image_features(self, batch: Prepared) -> torch.Tensor:
        pixels = tensor(batch["pixel_values"], self.device).to(self.dtype)
        return as_tensor(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, batch: Prepared) -> torch.Tensor:
        inputs = {k.removeprefix("text."): tensor(v, self.device) for k, v in batch.items() if k.startswith("text.")}
        return as_tensor(self.model.get_text_features(**inputs))
