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
import warnings
from collections.abc import Callable, Mapping, Sequence
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
