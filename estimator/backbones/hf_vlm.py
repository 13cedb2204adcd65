"""transformers vision-language models (Llava, Qwen2-VL, ...): the paper's feature is the language model's last
hidden state over the image + text prompt, pooled over the valid tokens.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

from core.settings import StorageConfig
from estimator.backbones.backbone import Backbone, Prepared, Preprocessor
from estimator.backbones.hf_clip import model_source
from estimator.backbones.spec import BackboneSpec
from estimator.backbones.tensors import (
    check_pairs,
    draft_size,
    resolved_device,
    resolved_dtype,
    rgb,
    samples_in,
    tensor,
)


def load_vlm(source: str, dtype: torch.dtype) -> torch.nn.Module:
    """The image-text-to-text model class for ``source``; the bare AutoModel for families not registered there."""
    try:
        return AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    except ValueError:  # "Unrecognized configuration class": not an image-text-to-text family
        return AutoModel.from_pretrained(source, dtype=dtype)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, T, H] -> [B, H]: mean over tokens where ``mask`` is 1, or the last such token (any padding side)."""
    mask = mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class HFVLMPreprocessor(Preprocessor):
    """The model's processor over one user turn per sample (image + text through its chat template)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        self.chat_template = getattr(processor, "chat_template", None)

    def prompt(self, text: str) -> str:
        """One user turn holding the image and the text, through the model's chat template when it has one."""
        if not self.chat_template:
            return f"{self.image_token}\n{text}"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def __call__(self, images: list[Image.Image], texts: list[str]) -> Prepared:
        check_pairs(images, texts)
        if not images:
            return {}
        # One image per prompt, nested: a flat list reads as one prompt's images to some processors (Gemma3,
        # SmolVLM). A prefix-LM processor's ``labels`` are a training target, not a model input.
        inputs = self.processor(images=[[im] for im in rgb(images)], text=[self.prompt(str(t)) for t in texts],
                                return_tensors="pt", padding=True)
        return {k: v.numpy() for k, v in inputs.items() if isinstance(v, torch.Tensor) and k != "labels"}


class HFVLMBackbone(Backbone):
    """A transformers VLM; the vector is its last hidden state pooled by ``spec.pooling`` (not normalised)."""

    def __init__(self, spec: BackboneSpec, storage: StorageConfig | None = None, *,
                 cache_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.device, self.dtype = resolved_device(spec), resolved_dtype(spec)
        source = model_source(spec, storage, cache_dir)
        self.files_spec = spec.model_copy(update={"model": source, "dtype": str(self.dtype).removeprefix("torch.")})
        self.preprocessor = HFVLMPreprocessor(AutoProcessor.from_pretrained(source))
        self.model = load_vlm(source, self.dtype).to(self.device).eval().requires_grad_(False)
        self.embed_dim = int(self.model.config.get_text_config().hidden_size)
        vision = getattr(self.model.config, "vision_config", None)
        self.preprocessor.draft_size = draft_size(spec.decode, getattr(vision, "image_size", None))
        # Only the hidden states are needed: skip the LM head's [B, T, vocab] logits where the model allows.
        params = inspect.signature(self.model.forward).parameters
        self._extra: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def forward(self, batch: Prepared) -> np.ndarray:
        if not samples_in(batch):
            return np.zeros((0, self.embed_dim), np.float32)
        inputs = {k: tensor(v, self.device) for k, v in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=True, return_dict=True, **self._extra)
            vectors = pool(out.hidden_states[-1].float(), inputs["attention_mask"], self.spec.pooling)
        return vectors.cpu().numpy().astype(np.float32, copy=False)
