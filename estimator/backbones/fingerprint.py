"""A backbone's fingerprint and embedding width, read from its files without building the model.

The driver plans a job for workers it does not resemble (a CPU head node, GPU actors): it must name the vectors
they will produce without loading a 7B model. So the fingerprint is computed from what the model is made of —
the weight files' contents (streamed in chunks, never held whole), the config, the preprocessing and tokenizer
files, the pooling, the modality and the dtype the *workers* will run in (``BackboneSpec.placed``) — and every
actor recomputes it from the files it loaded, so a mismatch is an error rather than a mislabelled cache.
Where the files live (local path, S3 prefix) is left out: the same weights from anywhere give the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec

from core.model_files import looks_like_path, strip_local_prefix
from core.settings import StorageConfig
from core.storage import filesystem
from estimator.backbones.common import clean_config
from estimator.backbones.kinds import KINDS
from estimator.backbones.open_clip_names import HF_HUB_PREFIX, OPEN_CLIP_CONFIG, unknown_arch_message
from estimator.backbones.spec import BackboneSpec

FINGERPRINT_VERSION = 2
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CHUNK = 8 << 20  # bytes read at a time: memory stays flat whatever the checkpoint's size
_NOT_MODEL = (".md", ".gitattributes")  # files in a model directory that change nothing computed


@dataclass(frozen=True)
class BackboneInfo:
    """What a plan needs to know about a backbone: its fingerprint, its vector width and what was hashed."""

    fingerprint: str
    embed_dim: int
    parts: dict[str, Any]


def _stream(f: Any, h: Any, size: int) -> None:
    while size > 0:
        chunk = f.read(min(_CHUNK, size))
        if not chunk:
            raise EOFError("weights file ended early")
        h.update(chunk)
        size -= len(chunk)


def weights_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """sha256 of a weights file, streamed. A safetensors file hashes its tensor table (name, dtype, shape,
    offsets) and the tensor bytes, but not its free-form ``__metadata__``; other formats hash their bytes."""
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        if not path.endswith(".safetensors"):
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
            return h.hexdigest()[:24]
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        h.update(json.dumps(header, sort_keys=True).encode())
        end = max((t["data_offsets"][1] for t in header.values()), default=0)
        _stream(f, h, end)  # the data section follows the header directly, tensors in offset order
    return h.hexdigest()[:24]


def _dir_files(uri: str, storage: StorageConfig | None) -> tuple[fsspec.AbstractFileSystem, str, list[str]]:
    fs, root = filesystem(strip_local_prefix(uri), storage)
    root = root.rstrip("/")
    names = sorted(posixpath.relpath(p, root) for p in fs.find(root))
    return fs, root, [n for n in names if not n.endswith(_NOT_MODEL)]


def _text_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return hashlib.sha256(fs.cat_file(path)).hexdigest()[:24]


def _directory_parts(uri: str, storage: StorageConfig | None, config_name: str) -> tuple[dict, dict]:
    """(config JSON, {file: digest}) of a model directory: weights by content, every other file by bytes."""
    fs, root, names = _dir_files(uri, storage)
    if config_name not in names:
        raise ValueError(f"model {uri!r}: the directory has no {config_name}")
    config = json.loads(fs.cat_file(f"{root}/{config_name}"))
    files = {
        n: (weights_digest if n.endswith(WEIGHT_SUFFIXES) else _text_digest)(fs, f"{root}/{n}")
        for n in names
        if n != config_name
    }
    return config, files


def _hub_parts(repo_id: str, config_name: str) -> tuple[dict, dict]:
    """(config JSON, {revision}) of a hub model: the commit the config was fetched at names the weights."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, config_name)
    revision = posixpath.basename(posixpath.dirname(path))  # .../snapshots/<commit>/config.json
    with open(path) as f:
        return json.load(f), {"hub": repo_id, "revision": revision}


def _open_clip_parts(spec: BackboneSpec, storage: StorageConfig | None) -> tuple[dict, int]:
    import open_clip

    if looks_like_path(spec.model):
        config, files = _directory_parts(spec.model, storage, OPEN_CLIP_CONFIG)
        model_cfg = config.get("model_cfg", config)
        return {"config": config, "files": files}, int(model_cfg["embed_dim"])
    if spec.model.startswith(HF_HUB_PREFIX):
        config, files = _hub_parts(spec.model[len(HF_HUB_PREFIX) :], OPEN_CLIP_CONFIG)
        return {"config": config, "files": files}, int(config["model_cfg"]["embed_dim"])
    model_cfg = open_clip.get_model_config(spec.model)
    if model_cfg is None:
        raise ValueError(unknown_arch_message(spec.model))
    if spec.pretrained is None:
        weights: str = "random-init-seed-0"  # OpenClipBackbone seeds a model without weights
    elif looks_like_path(spec.pretrained):
        fs, path = filesystem(strip_local_prefix(spec.pretrained), storage)
        weights = weights_digest(fs, path)
    else:
        weights = f"tag:{spec.pretrained}"  # open_clip's registry pins a tag to one file and its preprocessing
    return {"arch": spec.model, "config": model_cfg, "weights": weights}, int(model_cfg["embed_dim"])


def _hf_config(config: dict) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(**config)


def _hf_parts(spec: BackboneSpec, storage: StorageConfig | None) -> tuple[dict, int]:
    if looks_like_path(spec.model):
        raw, files = _directory_parts(spec.model, storage, "config.json")
    else:
        raw, files = _hub_parts(spec.model, "config.json")
    config = _hf_config(raw)
    if KINDS[spec.kind].fused:  # the language model's last hidden state
        dim = int(config.get_text_config().hidden_size)
    else:  # CLIP projects to projection_dim; SigLIP's towers end at their hidden size
        text = getattr(config, "text_config", config)
        dim = int(getattr(config, "projection_dim", None) or getattr(text, "projection_size", None)
                  or config.vision_config.hidden_size)
    return {"config": clean_config(config.to_dict()), "files": files}, dim


def describe(spec: BackboneSpec, storage: StorageConfig | None = None, *, gpu: bool = False) -> BackboneInfo:
    """Fingerprint and ``embed_dim`` of ``spec`` as workers with (``gpu=True``) or without a GPU will run it.

    Reads configs and streams weight files through a hash; builds no model, so memory stays small.
    """
    spec = spec.placed(gpu=gpu)
    kind_parts, dim = _open_clip_parts(spec, storage) if spec.kind == "open_clip" else _hf_parts(spec, storage)
    embed_dim = KINDS[spec.kind].vector_dim(spec, dim)
    parts = {
        "version": FINGERPRINT_VERSION,
        "kind": spec.kind,
        "modality": spec.modality,
        "pooling": spec.pooling,
        "dtype": spec.dtype,
        "embed_dim": embed_dim,
        **({"decode": spec.decode} if spec.decode != "full" else {}),  # full decoding: as before the option
        **kind_parts,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return BackboneInfo(fingerprint=digest, embed_dim=embed_dim, parts=parts)
