"""One way to open any URI: plain paths, ``file://`` and ``s3://`` (with a custom endpoint) go through fsspec,
and pyarrow gets the very same filesystem wrapped. Outputs are *published*: written under a temporary name and
then moved into place, so a reader never sees a half-written object.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any

import botocore.exceptions
import braceexpand
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from core.errors import is_transient
from core.settings import ConfigError, StorageConfig

_GLOB = re.compile(r"[*?\[]")


class StorageAccessError(ConfigError):
    """Storage that cannot be used as configured: one line naming the setting to fix, never a traceback."""


def storage_error(err: BaseException, *, setting: str, uri: str) -> StorageAccessError:
    """``err`` from a storage call as one line naming ``setting`` (``output_uri``, ``pool.2.uri``...) and the storage
    setting that would fix it."""
    text = str(err)
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        why = "no credentials: set storage.key and storage.secret (or the AWS variables)"
    elif isinstance(err, PermissionError) or "AccessDenied" in text or "InvalidAccessKeyId" in text:
        why = "access denied: check storage.key and storage.secret (or the AWS credentials) and the bucket's policy"
    elif isinstance(err, FileNotFoundError) and ("NoSuchBucket" in text or "bucket" in text.lower()):
        why = "the bucket does not exist"
    elif isinstance(err, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        why = f"cannot reach the storage endpoint ({err}): check storage.endpoint_url"
    else:
        why = f"{type(err).__name__}: {text or 'failed'}"
    return StorageAccessError(f"{setting} ({uri}): {why}")


def is_storage_fault(err: BaseException) -> bool:
    """True when ``err`` is the storage's (access denied, no credentials, a missing bucket, an endpoint that does
    not answer, a transient fault that outlived its retries), not the data's: a setting to fix, not input to
    quarantine."""
    missing_bucket = isinstance(err, FileNotFoundError) and "bucket does not exist" in str(err)
    return isinstance(err, PermissionError | botocore.exceptions.BotoCoreError) or missing_bucket or is_transient(err)


def check_writable(uri: str, storage: StorageConfig | None, *, setting: str) -> None:
    """Write and delete a probe object under ``uri``, so that an unwritable output fails before the work, not after.

    Raises ``StorageAccessError`` naming ``setting``. Probes with few attempts: an unreachable endpoint is a
    configuration error, and waiting out the full retry policy would only delay saying so."""
    probe_storage = (storage or StorageConfig()).model_copy(update={"max_attempts": 2})
    try:
        fs, path = filesystem(join(uri, f".probe-{uuid.uuid4().hex[:12]}"), probe_storage)
        if protocol_of(uri) == "file":
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, b"")
        fs.rm(path)
    except (OSError, botocore.exceptions.BotoCoreError) as err:
        raise storage_error(err, setting=setting, uri=uri) from None


def storage_options(uri: str, storage: StorageConfig | None) -> dict[str, Any]:
    """fsspec options for ``uri``: S3 settings apply to ``s3://`` only (defaults, retries included, when unset)."""
    if uri.startswith(("s3://", "s3a://")):
        return (storage or StorageConfig()).s3_options()
    return {}


def filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path within it."""
    return url_to_fs(uri, **storage_options(uri, storage))


def arrow_filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """The same filesystem as ``filesystem()``, for pyarrow (and Ray Data's ``filesystem=`` arguments)."""
    fs, path = filesystem(uri, storage)
    if protocol_of(uri) == "file":
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def protocol_of(uri: str) -> str:
    """``s3`` for ``s3://...``, ``file`` for plain paths and ``file://``."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A full URI for ``path`` on ``fs`` (``s3://bucket/key`` or ``/abs/path``)."""
    return fs.unstrip_protocol(path) if protocol_of(fs.unstrip_protocol(path)) != "file" else path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/' (works for local paths and object keys alike)."""
    head = uri.rstrip("/")
    return "/".join([head, *(p.strip("/") for p in parts)])


def shard_root(spec: str) -> str:
    """The fixed directory part of a shard spec: everything before the first glob or brace, cut at a '/'."""
    cut = min((m.start() for m in (_GLOB.search(spec), re.search(r"\{", spec)) if m), default=None)
    if cut is None:
        return spec.rstrip("/")
    return spec[:cut].rsplit("/", 1)[0]


def expand_shards(spec: str, storage: StorageConfig | None = None, *, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Expand a shard spec (prefix, glob or brace notation) into sorted shard URIs.

    A prefix lists every file under it that ends with one of ``suffixes``; a brace spec names files that must
    exist (a missing one is still returned, so the reader can record it as unreadable rather than drop it).
    """
    fs, _ = filesystem(spec, storage)
    if "{" in spec:
        return sorted(braceexpand.braceexpand(spec))
    if _GLOB.search(spec):
        return sorted(to_uri(fs, p) for p in fs.glob(fs._strip_protocol(spec)))
    root = fs._strip_protocol(spec)
    if fs.isfile(root):
        return [spec]
    found = fs.find(root)
    return sorted(to_uri(fs, p) for p in found if not suffixes or p.endswith(suffixes))


def object_version(info: dict[str, Any]) -> str:
    """What changes when an object or file is rewritten, from an fsspec ``info()``: the ETag on S3, else the
    modification time (or ``LastModified``); "" where the filesystem gives none."""
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or "")


def relative_name(root: str, uri: str) -> str:
    """``uri`` relative to ``root`` with its storage scheme removed: the same on local disk and on S3."""
    strip = lambda u: u.split("://", 1)[-1].rstrip("/")  # noqa: E731
    r, u = strip(root), strip(uri)
    return posixpath.relpath(u, r) if u.startswith(r + "/") else posixpath.basename(u)


def exists(uri: str, storage: StorageConfig | None = None) -> bool:
    fs, path = filesystem(uri, storage)
    return fs.exists(path)


@contextlib.contextmanager
def publish(uri: str, storage: StorageConfig | None = None) -> Iterator[IO[bytes]]:
    """Open ``uri`` for writing; the object appears under its name only once the block ends without error."""
    fs, path = filesystem(uri, storage)
    parent, name = posixpath.split(path)
    tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    if protocol_of(uri) == "file":
        fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def publish_bytes(uri: str, data: bytes, storage: StorageConfig | None = None) -> None:
    with publish(uri, storage) as f:
        f.write(data)


def write_parquet(table: pa.Table, uri: str, storage: StorageConfig | None = None, **kwargs: Any) -> None:
    """Publish ``table`` as one Parquet file at ``uri``."""
    with publish(uri, storage) as f:
        pq.write_table(table, f, **kwargs)


def take_rows(pf: pq.ParquetFile, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """The rows at ``rows`` (sorted, unique row indices of the file) of an open Parquet file, in that order, reading
    only the row groups that hold them. Raises ``IndexError`` for a row past the file's end."""
    meta = pf.metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.asarray(rows, np.int64)
    if len(rows) and (rows[0] < 0 or rows[-1] >= starts[-1]):
        raise IndexError(f"rows {rows[0]}..{rows[-1]} of a file of {starts[-1]} rows")
    group_of = np.searchsorted(starts, rows, side="right") - 1
    groups = np.unique(group_of)
    table = pf.read_row_groups(groups.tolist(), columns=columns)
    # a row's place in the table read: its offset in its group plus the rows of the groups read before it
    read_starts = np.concatenate([[0], np.cumsum([sizes[g] for g in groups])])[:-1].astype(np.int64)
    local = rows - starts[group_of] + read_starts[np.searchsorted(groups, group_of)]
    return table.take(pa.array(local, pa.int64()))


# Ranges closer than this are fetched as one request: S3 bills and throttles per request, and reading through a gap
# of 256 KiB takes a few milliseconds, less than another request's round trip.
DEFAULT_MAX_GAP = 256 << 10
_MAX_REQUEST_BYTES = 64 << 20  # bytes one ``cat_ranges`` call holds in memory at most (bar a single larger range)


def iter_ranges(
    uri: str, ranges: list[tuple[int, int]], storage: StorageConfig | None = None, *, max_gap: int = DEFAULT_MAX_GAP
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(i, bytes of ranges[i])`` for every (start, end) byte range of ``uri``, in file order.

    Ranges whose gap is at most ``max_gap`` merge into one ranged read (of 64 MB at most); the reads go out as
    ``cat_ranges`` calls of up to 64 MB (concurrent GETs on S3), so memory holds one call's bytes, whatever the
    number of ranges."""
    fs, path = filesystem(uri, storage)
    merged: list[list] = []  # [start, end, [range indices]]
    for i in sorted(range(len(ranges)), key=lambda i: ranges[i]):
        start, end = ranges[i]
        if merged and start - merged[-1][1] <= max_gap and end - merged[-1][0] <= _MAX_REQUEST_BYTES:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2].append(i)
        else:
            merged.append([start, end, [i]])
    call: list[list] = []
    size = 0
    for n, group in enumerate(merged):
        call.append(group)
        size += group[1] - group[0]
        following = merged[n + 1] if n + 1 < len(merged) else None
        if following is not None and size + following[1] - following[0] <= _MAX_REQUEST_BYTES:
            continue
        blobs = fs.cat_ranges([path] * len(call), [g[0] for g in call], [g[1] for g in call], on_error="raise")
        for (start, _, members), blob in zip(call, blobs, strict=True):
            for i in members:
                yield i, blob[ranges[i][0] - start : ranges[i][1] - start]
        call, size = [], 0


def read_bytes(uri: str, storage: StorageConfig | None = None) -> bytes:
    fs, path = filesystem(uri, storage)
    return fs.cat_file(path)
