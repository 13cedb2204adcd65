"""WebDataset tar shards as img2dataset writes them: ``KEY.jpg|png|webp`` beside ``KEY.txt`` and/or ``KEY.json``.

The tar is streamed member by member (``tarfile`` in ``r|`` mode over an fsspec file), so memory holds one
sample at a time whatever the shard's size. A corrupt tar keeps the samples read before the damage and
quarantines the rest of the shard with ``corrupt_tar``. A transient storage fault (connection reset, timeout, 5xx)
is raised, never quarantined: the shard is read again, not cached half-read.

A key is the member's full path within the tar without its extension (``dirA/000000050``), so members in different
folders are different samples; a key seen twice in one tar is quarantined as ``duplicate_key``.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

import pyarrow as pa

from core.contracts import make_sample_id
from core.errors import is_transient
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


def _group_members(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes], bool]]:
    """Yield (key, {ext: bytes}, repeated) for consecutive members sharing a key; ``repeated`` when the key (or one
    of its files) already appeared in this tar."""
    seen: set[str] = set()
    key, files, repeated = None, {}, False
    for member in tar:
        if not member.isfile():
            continue
        k, ext = _split_member(member.name)
        if key is not None and k != key:
            yield key, files, repeated
            files, repeated = {}, False
        if k != key:
            repeated = k in seen
            seen.add(k)
        key = k
        repeated = repeated or ext in files
        files[ext] = tar.extractfile(member).read()
    if key is not None:
        yield key, files, repeated


def _text_of(files: dict[str, bytes]) -> tuple[object, str | None, str | None]:
    """(text, meta JSON, problem): the .txt member, else the caption/text field of the .json member. The text is
    returned as found (a number or a list is the checker's to reject); undecodable bytes are a problem."""
    try:
        meta = files["json"].decode("utf-8") if "json" in files else None
        if "txt" in files:
            return files["txt"].decode("utf-8"), meta, None
    except UnicodeDecodeError:
        return None, None, "non_utf8_text"
    if meta is None:
        return None, None, None
    try:
        info = json.loads(meta)
    except json.JSONDecodeError:
        return None, meta, "malformed_meta"
    if isinstance(info, dict):
        caption = info.get("caption")
        return (caption if caption not in (None, "") else info.get("text")), meta, None
    return None, meta, None


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
                for key, files, repeated in _group_members(tar):
                    state["read"] += 1
                    image = next((files[e] for e in IMAGE_EXTS if e in files), None)
                    text, meta, problem = _text_of(files)
                    yield {
                        "sample_id": make_sample_id(spec.name, shard, key),
                        "source": spec.name,
                        "shard_uri": shard_uri,
                        "key": key,
                        "image": image,
                        "text": text,
                        "meta": meta,
                        "problem": "duplicate_key" if repeated else problem,
                    }
        except FileNotFoundError as err:
            quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"not found: {err}")
        except (tarfile.TarError, EOFError, OSError) as err:
            if is_transient(err) or isinstance(err, PermissionError):
                raise  # not the content's fault: the shard fails and is read again, never cached half-read
            reason = "unreadable_shard" if state["read"] == 0 and isinstance(err, OSError) else "corrupt_tar"
            quarantine.add(
                shard_uri=shard_uri,
                reason=reason,
                detail=f"{type(err).__name__}: {err} (after {state['read']} samples; the rest of the shard is lost)",
            )

    yield from batched(rows(), quarantine, image_check, batch_size)
