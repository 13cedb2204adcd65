"""Where a model's files are: telling a model location (a path, ``file://`` or ``s3://`` URI) from a model
name (ViT-B-32, org/repo), checking that a location holds what it should, and copying a remote one to local disk.

Backbones, the training stack and the checks a command runs before anything heavy all need these, so they live
in the foundation, beside ``core.storage``, and import no model library.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path

from core.settings import StorageConfig
from core.storage import filesystem, protocol_of

LOCAL_DIR_PREFIX = "local-dir:"


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
