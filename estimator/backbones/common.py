"""Helpers every backbone shares: bringing a model directory from any URI to local disk, telling paths from
model names, and turning whatever a model returns into normalised float32 vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.settings import StorageConfig
from core.storage import filesystem, protocol_of

LOCAL_DIR_PREFIX = "local-dir:"
# Config keys that name where or how a model was loaded, not what it computes.
_CONFIG_NOISE = {"_name_or_path", "transformers_version", "_commit_hash", "dtype", "torch_dtype",
                 "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "output_hidden_states",
                 "output_attentions", "return_dict", "use_cache", "use_return_dict"}


def default_cache_dir() -> Path:
    """Where remote model directories are copied; shared by every worker on a machine."""
    return Path(tempfile.gettempdir()) / "emt-backbones"


def looks_like_path(model: str) -> bool:
    """True for URIs, absolute/relative paths and existing directories; False for names (ViT-B-32, org/repo)."""
    if model.startswith(LOCAL_DIR_PREFIX) or "://" in model:
        return True
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


def strip_local_prefix(model: str) -> str:
    """The URI or path proper: without open_clip's ``local-dir:`` prefix, with ``~`` expanded."""
    model = model[len(LOCAL_DIR_PREFIX):] if model.startswith(LOCAL_DIR_PREFIX) else model
    return model if "://" in model else os.path.expanduser(model)


def localize(uri: str, storage: StorageConfig | None = None, cache_dir: str | Path | None = None) -> str:
    """A local path holding ``uri`` (a directory or a single file).

    Local paths come back as they are. Remote ones are copied once into a cache folder named after the URI and
    the objects' sizes and ETags, so a changed upload is fetched again; the copy is renamed into place only
    when complete, so concurrent workers never read a half-copied model.
    """
    uri = strip_local_prefix(uri)
    if protocol_of(uri) == "file":
        return filesystem(uri)[1]
    fs, root = filesystem(uri, storage)
    found = fs.find(root, detail=True)
    if not found:
        raise FileNotFoundError(f"nothing found at {uri}")
    listing = sorted((p, i.get("size"), str(i.get("ETag") or i.get("LastModified") or i.get("mtime")))
                     for p, i in found.items())
    key = hashlib.sha256(json.dumps([uri, listing], default=str).encode()).hexdigest()[:16]
    is_file = len(listing) == 1 and listing[0][0].rstrip("/") == root.rstrip("/")
    final = Path(cache_dir or default_cache_dir()) / key
    if not final.exists():
        tmp = final.parent / f".tmp-{uuid.uuid4().hex[:12]}"
        for path, _, _ in listing:
            rel = posixpath.basename(path) if is_file else posixpath.relpath(path, root.rstrip("/"))
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(tmp / rel))
        try:
            os.rename(tmp, final)
        except OSError:  # another worker finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return str(final / posixpath.basename(root)) if is_file else str(final)


def clean_config(cfg: Any) -> Any:
    """A config dict without the keys that only say where/how it was loaded (recursively)."""
    if isinstance(cfg, dict):
        return {k: clean_config(v) for k, v in sorted(cfg.items()) if k not in _CONFIG_NOISE}
    if isinstance(cfg, list | tuple):
        return [clean_config(v) for v in cfg]
    return cfg


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


def two_tower_vectors(
    modality: str,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    encode_images: Callable[[list[Image.Image]], torch.Tensor],
    encode_texts: Callable[[list[str]], torch.Tensor],
    embed_dim: int,
) -> np.ndarray:
    """concat(L2(image), L2(text)) for image+text, one tower otherwise: the CLIP kinds' sample vector."""
    use_image, use_text = "image" in modality, "text" in modality
    if use_image and use_text and len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts")
    n = len(images) if use_image else len(texts)
    if n == 0:
        return np.zeros((0, embed_dim), np.float32)
    parts = []
    with torch.inference_mode():
        if use_image:
            parts.append(F.normalize(encode_images(rgb(images)).float(), dim=-1))
        if use_text:
            parts.append(F.normalize(encode_texts([str(t) for t in texts]).float(), dim=-1))
    return torch.cat(parts, dim=-1).cpu().numpy().astype(np.float32, copy=False)


def require_dir_with(uri: str, filename: str, storage: StorageConfig | None = None, *, what: str) -> None:
    """Raise a ValueError naming ``uri`` unless it is a directory (or prefix) holding ``filename``."""
    fs, root = filesystem(strip_local_prefix(uri), storage)
    if not fs.isdir(root):
        raise ValueError(f"{what} {uri!r}: no such directory or prefix")
    if not fs.exists(posixpath.join(root.rstrip("/"), filename)):
        raise ValueError(f"{what} {uri!r}: the directory has no {filename}")


def require_file(uri: str, storage: StorageConfig | None = None, *, what: str) -> None:
    """Raise a ValueError naming ``uri`` unless it is a file (or object)."""
    fs, path = filesystem(strip_local_prefix(uri), storage)
    if not fs.isfile(path):
        raise ValueError(f"{what} {uri!r}: no such file or object")
