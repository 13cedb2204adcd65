"""Loading and saving any transformers image-text-to-text VLM (``AutoModelForImageTextToText`` +
``AutoProcessor``) from a local directory, an s3:// prefix (copied down once per machine) or a hub id."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor

from core.location import Location
from core.model_files import looks_like_path
from core.settings import StorageConfig
from estimator.backbones.tiny import save_tiny_backbone


def load_vlm(where: str | Location, *, dtype: torch.dtype = torch.float32, field: str = "model",
             chat_template: str | None = None) -> tuple[nn.Module, Any]:
    """(model, processor) from ``where`` (a location, or a model name on the Hugging Face hub); a ValueError
    naming ``field`` when a path or prefix holds no model. ``chat_template`` replaces the processor's (it is saved
    with the model, so the result reloads with it)."""
    where = Location.of(where)
    source = where.uri
    if looks_like_path(source):
        if not where.join("config.json").exists():
            raise ValueError(f"{field} {source!r}: no model there (no config.json)")
        source = where.local_copy()
    processor = AutoProcessor.from_pretrained(source)
    if chat_template:
        processor.chat_template = chat_template
    return AutoModelForImageTextToText.from_pretrained(source, dtype=dtype), processor


def save_vlm(model: nn.Module, processor: Any, where: str | Location) -> None:
    """``save_pretrained`` (safetensors) of model and processor at ``where``; on object storage config.json is
    uploaded last, so a half-uploaded model never loads."""
    where = Location.of(where)
    if where.protocol == "file":
        model.save_pretrained(where.path)
        processor.save_pretrained(where.path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        upload_dir(tmp, where, last="config.json")


def upload_dir(local: str, where: Location, *, last: str | None = None) -> None:
    """Copy a local directory tree to ``where`` (``last`` uploaded after every other file)."""
    fs, root = where.fs, where.path
    files = [os.path.relpath(os.path.join(d, f), local) for d, _, names in os.walk(local) for f in names]
    for rel in sorted(files, key=lambda r: (r == last, r)):
        fs.put_file(os.path.join(local, rel), f"{root.rstrip('/')}/{rel}")


def save_tiny_vlm(uri: str, storage: StorageConfig | None = None, *, seed: int = 0, **size: int) -> str:
    """A tiny random-initialised Llava (with a chat template) saved at ``uri``, for tests and the demo; ``size``
    (``width``, ``layers``, ``image_size``) scales it."""
    save_tiny_backbone("hf_vlm", uri, storage, seed=seed, **size)
    return uri


def architecture_hash(model: nn.Module) -> str:
    """What a checkpoint must match to be loaded into ``model``: parameter names, shapes and dtypes."""
    layout = [(k, list(v.shape), str(v.dtype)) for k, v in sorted(model.state_dict().items())]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]
