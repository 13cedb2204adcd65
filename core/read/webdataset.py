"""WebDataset tar shards as img2dataset writes them: ``KEY.jpg|png|webp`` beside ``KEY.txt`` and/or ``KEY.json``.

The tar is streamed member by member (``tarfile`` in ``r|`` mode over an fsspec file), so memory holds one
sample at a time whatever the shard's size. A corrupt tar keeps the samples read before the damage and
quarantines the rest of the shard with ``corrupt_tar``. A transient storage fault (connection reset, timeout, 5xx)
is raised, never quarantined: the shard is read again, not cached half-read.

A key is the member's full path within the tar without its extension (``dirA/000000050``), so members in different
folders are different samples; a key seen twice in one tar is quarantined as ``duplicate_key``.

Each sample records its span in the tar (``byte_offset``, ``byte_length``; see ``core.contracts.LOCATION``), and
``read_webdataset_spans`` reads selected samples back from their spans alone, one range read per nearby group.
A tar's global pax header (rare; img2dataset writes none) is not part of any span, so a span read misses what it
sets.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Iterator

import pyarrow as pa

from core.contracts import make_sample_id
from core.errors import is_transient
from core.read.checks import Reading, batched
from core.settings import SourceSpec
from core.storage import filesystem, iter_ranges, relative_name

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SHARD_SUFFIXES = (".tar",)


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the base name."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def _block_end(member: tarfile.TarInfo) -> int:
    """Where ``member``'s data ends in the tar, padded to the 512-byte block (where the next header starts)."""
    return member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _group_members(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes], bool, tuple[int, int]]]:
    """Yield (key, {ext: bytes}, repeated, (start, end)) for consecutive members sharing a key; ``repeated`` when the
    key (or one of its files) already appeared in this tar; start..end is the group's span in the tar, from its
    first member's header to its last member's padded data."""
    seen: set[str] = set()
    key, files, repeated, span = None, {}, False, (0, 0)
    for member in tar:
        if not member.isfile():
            continue
        k, ext = _split_member(member.name)
        if key is not None and k != key:
            yield key, files, repeated, span
            files, repeated = {}, False
        if k != key:
            repeated = k in seen
            seen.add(k)
            span = (member.offset, 0)
        key = k
        repeated = repeated or ext in files
        files[ext] = tar.extractfile(member).read()
        span = (span[0], _block_end(member))
    if key is not None:
        yield key, files, repeated, span


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


def _sample_row(spec: SourceSpec, shard: str, shard_uri: str, key: str, files: dict[str, bytes]) -> dict:
    """A candidate sample row from one key's members (``problem`` set when its text cannot be used)."""
    text, meta, problem = _text_of(files)
    return {
        "sample_id": make_sample_id(spec.name, shard, key),
        "source": spec.name,
        "shard_uri": shard_uri,
        "key": key,
        "image": next((files[e] for e in IMAGE_EXTS if e in files), None),
        "text": text,
        "meta": meta,
        "problem": problem,
    }


def read_webdataset_shard(reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
    """Stream one tar shard as sample tables; bad members and shards go to ``quarantine``."""
    spec, quarantine, storage = reading.spec, reading.quarantine, reading.storage
    shard = relative_name(reading.root, shard_uri)
    state = {"read": 0}

    def rows() -> Iterator[dict]:
        fs, path = filesystem(shard_uri, storage)
        try:
            with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for key, files, repeated, (start, end) in _group_members(tar):
                    state["read"] += 1
                    row = _sample_row(spec, shard, shard_uri, key, files)
                    if repeated:
                        row["problem"] = "duplicate_key"
                    yield {**row, "byte_offset": start, "byte_length": end - start}
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

    yield from batched(rows(), quarantine, reading.image_check, reading.batch_size)


def read_webdataset_spans(reading: Reading, shard_uri: str, wanted: pa.Table) -> Iterator[pa.Table]:
    """The samples ``wanted`` names (columns ``key``, ``byte_offset``, ``byte_length``; rows in any order) as sample
    tables in their order in the tar, each parsed from its span alone (``core.storage.iter_ranges``: nearby spans
    are one request). A span that no longer holds its key (the shard was rewritten since the
    location was recorded) is quarantined as ``stale_location``."""
    spec, quarantine, storage = reading.spec, reading.quarantine, reading.storage
    shard = relative_name(reading.root, shard_uri)
    keys = wanted["key"].to_pylist()
    starts = wanted["byte_offset"].to_pylist()
    spans = [(s, s + n) for s, n in zip(starts, wanted["byte_length"].to_pylist(), strict=True)]

    def rows() -> Iterator[dict]:
        for i, data in iter_ranges(shard_uri, spans, storage):
            sample_id = make_sample_id(spec.name, shard, keys[i])
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
                    groups = list(_group_members(tar))
            except (tarfile.TarError, EOFError) as err:
                groups, detail = [], f"{type(err).__name__}: {err}"
            else:
                detail = f"the span holds {[g[0] for g in groups]}"
            if len(groups) != 1 or groups[0][0] != keys[i]:
                quarantine.add(
                    shard_uri=shard_uri,
                    reason="stale_location",
                    sample_id=sample_id,
                    detail=f"{detail}, not {keys[i]!r} at bytes {spans[i][0]}..{spans[i][1]}",
                )
                continue
            row = _sample_row(spec, shard, shard_uri, keys[i], groups[0][1])
            yield {**row, "byte_offset": starts[i], "byte_length": spans[i][1] - starts[i]}

    yield from batched(rows(), quarantine, reading.image_check, reading.batch_size)
