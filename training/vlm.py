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

from core.model_files import localize, looks_like_path
from core.settings import StorageConfig
from core.storage import exists, filesystem, join, protocol_of
from estimator.backbones.tiny import save_tiny_backbone


def load_vlm(uri: str, storage: StorageConfig | None = None, *, dtype: torch.dtype = torch.float32,
             field: str = "model", chat_template: str | None = None) -> tuple[nn.Module, Any]:
    """(model, processor) from ``uri``; a ValueError naming ``field`` when a path or prefix holds no model.
    ``chat_template`` replaces the processor's (it is saved with the model, so the result reloads with it)."""
    if looks_like_path(uri):
        if not exists(join(uri, "config.json"), storage):
            raise ValueError(f"{field} {uri!r}: no model there (no config.json)")
        uri = localize(uri, storage)
    processor = AutoProcessor.from_pretrained(uri)
    if chat_template:
        processor.chat_template = chat_template
    return AutoModelForImageTextToText.from_pretrained(uri, dtype=dtype), processor


def save_vlm(model: nn.Module, processor: Any, uri: str, storage: StorageConfig | None = None) -> None:
    """``save_pretrained`` (safetensors) of model and processor under ``uri``; on object storage config.json is
    uploaded last, so a half-uploaded model never loads."""
    if protocol_of(uri) == "file":
        path = filesystem(uri)[1]
        model.save_pretrained(path)
        processor.save_pretrained(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        upload_dir(tmp, uri, storage, last="config.json")


def upload_dir(local: str, uri: str, storage: StorageConfig | None, *, last: str | None = None) -> None:
    """Copy a local directory tree to ``uri`` (``last`` uploaded after every other file)."""
    fs, root = filesystem(uri, storage)
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
