"""Helpers every backbone shares: turning whatever a model returns into normalised float32 vectors, and the
device and dtype a spec resolves to on this worker. Where a model's files are is ``core.model_files``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from estimator.backbones.spec import BackboneSpec


def as_tensor(out: Any) -> torch.Tensor:
    """The feature tensor from a ``get_*_features`` result: a tensor (transformers 4) or a ModelOutput (5)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot find features in a {type(out).__name__}")


def rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Robot frames may be RGBA or greyscale; every backbone expects RGB."""
    return [im if im.mode == "RGB" else im.convert("RGB") for im in images]


def check_pairs(images: Sequence[Image.Image], texts: Sequence[str], modality: str = "image+text") -> None:
    """Raise unless there is one text per image where the vector uses both."""
    if "image" in modality and "text" in modality and len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts")


def draft_size(decode: str, image_size: int | Sequence[int] | None) -> int | None:
    """The side JPEGs may be decoded down to: the model's input side when ``decode`` is "reduced", else None."""
    if decode != "reduced" or image_size is None:
        return None
    return int(max(image_size)) if isinstance(image_size, Sequence) else int(image_size)


def samples_in(batch: Mapping[str, np.ndarray]) -> int:
    """How many samples a prepared batch holds (0 for an empty one)."""
    return len(next(iter(batch.values()))) if batch else 0


def tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``. Arrays from Ray's object store are read-only; torch only reads them (every use
    below copies on the way to the model), so its warning about non-writable arrays is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)


def two_tower_vectors(
    modality: str,
    n: int,
    encode_images: Callable[[], torch.Tensor],
    encode_texts: Callable[[], torch.Tensor],
    embed_dim: int,
) -> np.ndarray:
    """concat(L2(image), L2(text)) for image+text, one tower otherwise: the CLIP kinds' vector for ``n`` samples."""
    if n == 0:
        return np.zeros((0, embed_dim), np.float32)
    parts = []
    with torch.inference_mode():
        if "image" in modality:
            parts.append(F.normalize(encode_images().float(), dim=-1))
        if "text" in modality:
            parts.append(F.normalize(encode_texts().float(), dim=-1))
    return torch.cat(parts, dim=-1).cpu().numpy().astype(np.float32, copy=False)


def resolved_device(spec: BackboneSpec) -> torch.device:
    """The device ``spec`` runs on in this process: "auto" is CUDA where this worker has one."""
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec.device)


def resolved_dtype(spec: BackboneSpec) -> torch.dtype:
    """The dtype ``spec`` runs in on this worker: "auto" is bfloat16 on CUDA, float32 on CPU."""
    if spec.dtype == "auto":
        return torch.bfloat16 if resolved_device(spec).type == "cuda" else torch.float32
    return getattr(torch, spec.dtype)
