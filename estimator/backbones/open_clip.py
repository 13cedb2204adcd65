"""open_clip models: a built-in architecture (with a weights tag, a local file or an S3 checkpoint), or a
directory holding ``open_clip_config.json`` + weights, locally or under an S3 prefix.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.factory import _find_checkpoint_in_dir
from PIL import Image
from torchvision.transforms import Compose, Normalize
from transformers.initialization import TORCH_INIT_FUNCTIONS, TORCH_MODULES_TO_PATCH

from core.model_files import LOCAL_DIR_PREFIX, localize, looks_like_path
from core.settings import StorageConfig
from estimator.backbones.backbone import Backbone, Prepared, Preprocessor
from estimator.backbones.open_clip_names import OPEN_CLIP_CONFIG, unknown_arch_message
from estimator.backbones.spec import BackboneSpec
from estimator.backbones.tensors import (
    check_pairs,
    draft_size,
    resolved_device,
    resolved_dtype,
    rgb,
    samples_in,
    tensor,
    two_tower_vectors,
)


class OpenClipPreprocessor(Preprocessor):
    """open_clip's eval transform, cut where the image becomes a float tensor: the CPU side resizes and crops to
    uint8 pixels (a quarter of float32's bytes), ``forward`` scales and normalises them on the model's device,
    exactly as ``ToTensor`` + ``Normalize`` would. A transform of another shape is applied whole (float32)."""

    def __init__(self, transform: Compose, tokenizer: object, modality: str) -> None:
        steps = list(transform.transforms)
        cut = next((i for i, t in enumerate(steps) if type(t).__name__.endswith("ToTensor")), None)
        tail = steps[cut + 1:] if cut is not None else []
        if cut is not None and all(isinstance(t, Normalize) for t in tail):
            self.geometric, self.normalize = Compose(steps[:cut]), tail
        else:
            self.geometric, self.normalize = None, []
        self.transform, self.tokenizer, self.modality = transform, tokenizer, modality

    def __call__(self, images: list[Image.Image], texts: list[str]) -> Prepared:
        check_pairs(images, texts, self.modality)
        out: Prepared = {}
        if "image" in self.modality and images:
            if self.geometric is not None:
                out["pixels_u8"] = np.stack([np.asarray(self.geometric(im), dtype=np.uint8) for im in rgb(images)])
            else:
                out["pixels"] = torch.stack([self.transform(im) for im in rgb(images)]).numpy()
        if "text" in self.modality and texts:
            out["tokens"] = self.tokenizer([str(t) for t in texts]).numpy()
        return out

    def pixels(self, batch: Prepared, device: torch.device) -> torch.Tensor:
        """The float image batch [n, 3, H, W] the model takes, built on ``device``."""
        if "pixels" in batch:
            return tensor(batch["pixels"], device)
        x = tensor(batch["pixels_u8"], device).permute(0, 3, 1, 2).float().div(255)  # = ToTensor, batched
        for step in self.normalize:
            x = step(x)
        return x


class OpenClipBackbone(Backbone):
    """An open_clip model; the vector is the L2-normalised image and/or text embedding (see ``modality``)."""

    def __init__(
        self, spec: BackboneSpec, storage: StorageConfig | None = None, *, cache_dir: str | Path | None = None
    ) -> None:
        self.spec = spec
        self.device, self.dtype = resolved_device(spec), resolved_dtype(spec)
        name, pretrained, self.model_cfg = _resolve(spec, storage, cache_dir)
        local = name[len(LOCAL_DIR_PREFIX):] if name.startswith(LOCAL_DIR_PREFIX) else name
        self.files_spec = spec.model_copy(update={"model": local, "pretrained": pretrained,
                                                  "dtype": str(self.dtype).removeprefix("torch.")})
        model, self.preprocess = _create(name, pretrained)
        self.preprocessor = OpenClipPreprocessor(self.preprocess, open_clip.get_tokenizer(name), spec.modality)
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.preprocessor.draft_size = draft_size(spec.decode, getattr(self.model.visual, "image_size", None))
        dim = int(self.model_cfg["embed_dim"])
        self.embed_dim = 2 * dim if spec.modality == "image+text" else dim

    def forward(self, batch: Prepared) -> np.ndarray:
        return two_tower_vectors(
            self.spec.modality,
            samples_in(batch),
            lambda: self.model.encode_image(self.preprocessor.pixels(batch, self.device).to(self.dtype)),
            lambda: self.model.encode_text(tensor(batch["tokens"], self.device)),
            self.embed_dim,
        )


# Creations in one process take turns: each swaps torch's init functions and swaps them back.
_CREATING = threading.Lock()
_SKIPPING = threading.local()


@contextmanager
def _init_skipped() -> Iterator[None]:
    """torch's parameter init functions as no-ops in this thread, wherever torch.nn binds them (the modules
    transformers patches for the same purpose); other threads building a module meanwhile still initialise it.
    ``transformers.initialization.no_init_weights`` does this for every thread, and imports ``modeling_utils``
    (1.3 s here), more than it saves."""
    saved = [(module, name, getattr(module, name)) for module in map(sys.modules.get, TORCH_MODULES_TO_PATCH)
             if module is not None for name in TORCH_INIT_FUNCTIONS if hasattr(module, name)]
    try:
        for module, name, function in saved:
            setattr(module, name, _unless_skipping(function))
        _SKIPPING.on = True
        yield
    finally:
        _SKIPPING.on = False
        for module, name, function in saved:
            setattr(module, name, function)


def _unless_skipping(init: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def maybe_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor if getattr(_SKIPPING, "on", False) else init(tensor, *args, **kwargs)
    return maybe_init


def _create(name: str, pretrained: str | None) -> tuple[torch.nn.Module, Compose]:
    """open_clip's model and eval transform. When a checkpoint follows (a weights tag or file, a directory holding
    weights), open_clip loads it over every parameter with ``strict=True``, so its random initialisation is skipped:
    that init was ~1 s of a ViT-B-32's 1.2-1.8 s build on a CPU core, paid by every embedding actor at start.
    Without weights the model is random: its initialisation is seeded, so every worker (and every run) builds the
    same model and the fingerprint, hence the embedding cache, holds."""
    checkpoint = pretrained or (name.startswith(LOCAL_DIR_PREFIX)
                                and _find_checkpoint_in_dir(Path(name[len(LOCAL_DIR_PREFIX):])) is not None)
    with _CREATING, torch.random.fork_rng(devices=[]), _init_skipped() if checkpoint else nullcontext():
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    return model, preprocess


def _resolve(
    spec: BackboneSpec, storage: StorageConfig | None, cache_dir: str | Path | None
) -> tuple[str, str | None, dict]:
    """The open_clip model name to create, the local weights (or tag) and the architecture config."""
    if looks_like_path(spec.model):
        local = Path(localize(spec.model, storage, cache_dir))
        cfg = json.loads((local / OPEN_CLIP_CONFIG).read_text())
        return f"{LOCAL_DIR_PREFIX}{local}", None, cfg.get("model_cfg", cfg)
    model_cfg = open_clip.get_model_config(spec.model)
    if model_cfg is None:
        raise ValueError(unknown_arch_message(spec.model))
    pretrained = spec.pretrained
    if pretrained and looks_like_path(pretrained):
        pretrained = localize(pretrained, storage, cache_dir)
    return spec.model, pretrained, model_cfg
