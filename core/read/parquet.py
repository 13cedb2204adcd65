"""Parquet shards holding encoded image bytes and text in two columns (names configurable).

Streams row groups with ``ParquetFile.iter_batches`` and reads only the two columns it needs. The image column
may be plain binary or the Hugging Face ``Image`` struct (``{bytes, path}``). The key of a row is its index in
the file, so ``sample_id`` is stable as long as the shard is immutable.

Each sample records its ``row_group`` (``core.contracts.LOCATION``); ``read_parquet_rows`` reads selected samples
back from their row groups alone (the footer, then only those groups' two column chunks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import make_sample_id
from core.errors import is_transient
from core.read.checks import Quarantine, Reading, batched
from core.settings import SourceSpec, StorageConfig
from core.storage import filesystem, relative_name

SHARD_SUFFIXES = (".parquet",)


def image_bytes(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Encoded image bytes from a binary column or an HF ``Image`` struct column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        column = pc.struct_field(column, "bytes")
    return column.cast(pa.binary())


def _schema_problem(schema: pa.Schema, spec: SourceSpec) -> str | None:
    for name in (spec.image_column, spec.text_column):
        if name not in schema.names:
            return f"missing column {name!r} (has {schema.names})"
    img = schema.field(spec.image_column).type
    if not (
        pa.types.is_binary(img)
        or pa.types.is_large_binary(img)
        or (pa.types.is_struct(img) and img.get_field_index("bytes") >= 0)
    ):
        return f"column {spec.image_column!r} is {img}, expected binary image bytes"
    txt = schema.field(spec.text_column).type
    if not (pa.types.is_string(txt) or pa.types.is_large_string(txt)):
        return f"column {spec.text_column!r} is {txt}, expected string"
    return None


def _row_group_starts(pf: pq.ParquetFile) -> np.ndarray:
    """The file row index each row group starts at, plus the file's row count at the end."""
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def _rows_of(
    spec: SourceSpec, shard: str, shard_uri: str, table: pa.RecordBatch | pa.Table, keys: list[int], groups: list[int]
) -> Iterator[dict]:
    images = image_bytes(table.column(spec.image_column)).to_pylist()
    texts = table.column(spec.text_column).to_pylist()
    for image, text, key, group in zip(images, texts, keys, groups, strict=True):
        yield {
            "sample_id": make_sample_id(spec.name, shard, str(key)),
            "source": spec.name,
            "shard_uri": shard_uri,
            "key": str(key),
            "image": image,
            "text": text,
            "row_group": group,
        }


def _read_rows(
    spec: SourceSpec,
    shard_uri: str,
    quarantine: Quarantine,
    storage: StorageConfig | None,
    rows: Callable[[pq.ParquetFile], Iterator[dict]],
    **open_options: str,
) -> Iterator[dict]:
    """Open the shard, check its schema, and yield ``rows(parquet_file)``; faults go to ``quarantine`` (a transient
    or access fault is raised: the storage's, not the shard's)."""
    fs, path = filesystem(shard_uri, storage)
    try:
        with fs.open(path, "rb", **open_options) as f:
            pf = pq.ParquetFile(f, pre_buffer=False)
            if (problem := _schema_problem(pf.schema_arrow, spec)) is not None:
                quarantine.add(shard_uri=shard_uri, reason="wrong_schema", detail=problem)
                return
            yield from rows(pf)
    except FileNotFoundError as err:
        quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"not found: {err}")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, EOFError) as err:
        if is_transient(err) or isinstance(err, PermissionError):
            raise  # not the content's fault: the shard fails and is read again, never cached half-read
        quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"{type(err).__name__}: {err}")


def read_parquet_shard(reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
    """Stream one Parquet shard as sample tables; a shard with the wrong schema is quarantined whole."""
    spec, quarantine, storage = reading.spec, reading.quarantine, reading.storage
    shard = relative_name(reading.root, shard_uri)

    def rows(pf: pq.ParquetFile) -> Iterator[dict]:
        starts, offset = _row_group_starts(pf), 0
        for rb in pf.iter_batches(batch_size=reading.batch_size, columns=[spec.image_column, spec.text_column]):
            keys = list(range(offset, offset + rb.num_rows))
            groups = (np.searchsorted(starts, keys, side="right") - 1).tolist()
            yield from _rows_of(spec, shard, shard_uri, rb, keys, groups)
            offset += rb.num_rows

    found = _read_rows(spec, shard_uri, quarantine, storage, rows)
    yield from batched(found, quarantine, reading.image_check, reading.batch_size)


def read_parquet_rows(reading: Reading, shard_uri: str, wanted: pa.Table) -> Iterator[pa.Table]:
    """The samples ``wanted`` names (columns ``key``, ``row_group``; rows in any order) as sample tables in file
    order, reading only their row groups. A key outside its recorded row group (the shard was rewritten since the
    location was recorded) is quarantined as ``stale_location``."""
    spec, quarantine, storage = reading.spec, reading.quarantine, reading.storage
    shard = relative_name(reading.root, shard_uri)
    by_group: dict[int, list[int]] = {}
    for key, group in zip(wanted["key"].to_pylist(), wanted["row_group"].to_pylist(), strict=True):
        by_group.setdefault(group, []).append(int(key))

    def rows(pf: pq.ParquetFile) -> Iterator[dict]:
        starts = _row_group_starts(pf)
        for group in sorted(by_group):
            keys = sorted(by_group[group])
            inside = [k for k in keys if group < len(starts) - 1 and starts[group] <= k < starts[group + 1]]
            for key in sorted(set(keys) - set(inside)):
                quarantine.add(
                    shard_uri=shard_uri,
                    reason="stale_location",
                    sample_id=make_sample_id(spec.name, shard, str(key)),
                    detail=f"row {key} is not in row group {group} (the shard has {starts[-1]} rows)",
                )
            if inside:
                table = pf.read_row_group(group, columns=[spec.image_column, spec.text_column])
                table = table.take(pa.array(np.asarray(inside) - starts[group]))
                yield from _rows_of(spec, shard, shard_uri, table, inside, [group] * len(inside))

    # no read-ahead (s3fs would fetch 50 MB past every read): the footer and the wanted column chunks only
    found = _read_rows(spec, shard_uri, quarantine, storage, rows, cache_type="none")
    yield from batched(found, quarantine, reading.image_check, reading.batch_size)
