"""WebDataset tar shards as img2dataset writes them: ``KEY.jpg|png|webp`` beside ``KEY.txt`` and/or ``KEY.json``.

The tar is streamed member by member (``tarfile`` in ``r|`` mode over an fsspec file), so memory holds one
sample at a time whatever the shard's size. A corrupt tar keeps the samples read before the damage and
quarantines the rest of the shard with ``corrupt_tar``.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

import pyarrow as pa

from core.contracts import make_sample_id
from core.read.base import ImageCheck, Quarantine, batched
from core.settings import SourceSpec, StorageConfig
from core.storage import filesystem, relative_name

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SHARD_SUFFIXES = (".tar",)


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the base name."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def _group_members(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) for consecutive members sharing a key."""
    key, files = None, {}
    for member in tar:
        if not member.isfile():
            continue
        k, ext = _split_member(member.name)
        if key is not None and k != key:
            yield key, files
            files = {}
        key = k
        files[ext] = tar.extractfile(member).read()
    if key is not None:
        yield key, files


def _text_of(files: dict[str, bytes]) -> tuple[str | None, str | None]:
    """(text, meta JSON): the .txt member, else the caption/text field of the .json member."""
    meta = files["json"].decode("utf-8", "replace") if "json" in files else None
    if "txt" in files:
        return files["txt"].decode("utf-8", "replace"), meta
    if meta is not None:
        try:
            info = json.loads(meta)
        except json.JSONDecodeError:
            return None, meta
        if isinstance(info, dict):
            return info.get("caption") or info.get("text"), meta
    return None, meta


def read_webdataset_shard(
    spec: SourceSpec,
    shard_uri: str,
    *,
    root: str,
    quarantine: Quarantine,
    storage: StorageConfig | None = None,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
) -> Iterator[pa.Table]:
    """Stream one tar shard as sample tables; bad members and shards go to ``quarantine``."""
    shard = relative_name(root, shard_uri)
    state = {"read": 0}

    def rows() -> Iterator[dict]:
        fs, path = filesystem(shard_uri, storage)
        try:
            with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for key, files in _group_members(tar):
                    state["read"] += 1
                    image = next((files[e] for e in IMAGE_EXTS if e in files), None)
                    text, meta = _text_of(files)
                    yield {
                        "sample_id": make_sample_id(spec.name, shard, posixpath.basename(key)),
                        "source": spec.name,
                        "shard_uri": shard_uri,
                        "key": posixpath.basename(key),
                        "image": image,
                        "text": text,
                        "meta": meta,
                    }
        except FileNotFoundError as err:
            quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"not found: {err}")
        except (tarfile.TarError, EOFError, OSError) as err:
            reason = "unreadable_shard" if state["read"] == 0 and isinstance(err, OSError) else "corrupt_tar"
            quarantine.add(
                shard_uri=shard_uri,
                reason=reason,
                detail=f"{type(err).__name__}: {err} (after {state['read']} samples; the rest of the shard is lost)",
            )

    yield from batched(rows(), quarantine, image_check, batch_size)
