"""What a model is made of, hashed from its files without building it: weight files by content (streamed in chunks,
never held whole), every other file by bytes, a hub model by the commit its config was fetched at. Torch-free, so
each backbone kind (``kinds.py``) can say what its fingerprint is made of.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

import fsspec

from core.model_files import default_cache_dir, strip_local_prefix
from core.settings import StorageConfig
from core.storage import filesystem, object_version, publish_bytes

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CHUNK = 8 << 20  # bytes read at a time: memory stays flat whatever the checkpoint's size
_NOT_MODEL = (".md", ".gitattributes")  # files in a model directory that change nothing computed

# Config keys that name where or how a model was loaded, not what it computes.
_CONFIG_NOISE = {"_name_or_path", "transformers_version", "_commit_hash", "dtype", "torch_dtype",
                 "_attn_implementation", "_attn_implementation_autoset", "attn_implementation", "output_hidden_states",
                 "output_attentions", "return_dict", "use_cache", "use_return_dict"}


def clean_config(cfg: Any) -> Any:
    """A config dict without the keys that only say where/how it was loaded (recursively)."""
    if isinstance(cfg, dict):
        return {k: clean_config(v) for k, v in sorted(cfg.items()) if k not in _CONFIG_NOISE}
    if isinstance(cfg, list | tuple):
        return [clean_config(v) for v in cfg]
    return cfg


def _stream(f: Any, h: Any, size: int) -> None:
    while size > 0:
        chunk = f.read(min(_CHUNK, size))
        if not chunk:
            raise EOFError("weights file ended early")
        h.update(chunk)
        size -= len(chunk)


def weights_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """sha256 of a weights file, streamed. A safetensors file hashes its tensor table (name, dtype, shape,
    offsets) and the tensor bytes, but not its free-form ``__metadata__``; other formats hash their bytes.

    Remembered per version of the file (its URI, size, ETag or modification time and inode) on this machine,
    beside the model copies (``core.model_files.default_cache_dir``): the driver planning a run and every worker
    loading the model would otherwise stream the whole checkpoint again each time (0.45 s for ViT-B-32's 600 MB
    here; ~10 s for a 15 GB VLM), as the embedding cache trusts a shard's version the same way."""
    info = fs.info(path)
    version = [fs.unstrip_protocol(path), info.get("size"), object_version(info), info.get("ino")]
    memo = default_cache_dir() / "weights-digests" / hashlib.sha256(json.dumps(version).encode()).hexdigest()[:32]
    try:
        return memo.read_text()
    except OSError:
        pass
    digest = _weights_digest(fs, path)
    publish_bytes(str(memo), digest.encode())  # atomic: a reader sees the whole digest or none
    return digest


def _weights_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
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


def directory_parts(uri: str, storage: StorageConfig | None, config_name: str) -> tuple[dict, dict]:
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


def hub_parts(repo_id: str, config_name: str) -> tuple[dict, dict]:
    """(config JSON, {revision}) of a hub model: the commit the config was fetched at names the weights."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, config_name)
    revision = posixpath.basename(posixpath.dirname(path))  # .../snapshots/<commit>/config.json
    with open(path) as f:
        return json.load(f), {"hub": repo_id, "revision": revision}
