"""Parquet shards holding encoded image bytes and text in two columns (names configurable).

Streams row groups with ``ParquetFile.iter_batches`` and reads only the two columns it needs. The image column
may be plain binary or the Hugging Face ``Image`` struct (``{bytes, path}``). The key of a row is its index in
the file, so ``sample_id`` is stable as long as the shard is immutable.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import make_sample_id
from core.errors import is_transient
from core.read.base import ImageCheck, Quarantine, batched
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


def read_parquet_shard(
    spec: SourceSpec,
    shard_uri: str,
    *,
    root: str,
    quarantine: Quarantine,
    storage: StorageConfig | None = None,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
) -> Iterator[pa.Table]:
    """Stream one Parquet shard as sample tables; a shard with the wrong schema is quarantined whole."""
    shard = relative_name(root, shard_uri)

    def rows() -> Iterator[dict]:
        fs, path = filesystem(shard_uri, storage)
        try:
            with fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                if (problem := _schema_problem(pf.schema_arrow, spec)) is not None:
                    quarantine.add(shard_uri=shard_uri, reason="wrong_schema", detail=problem)
                    return
                offset = 0
                for rb in pf.iter_batches(batch_size=batch_size, columns=[spec.image_column, spec.text_column]):
                    images = image_bytes(rb.column(spec.image_column)).to_pylist()
                    texts = rb.column(spec.text_column).to_pylist()
                    for i, (image, text) in enumerate(zip(images, texts, strict=True)):
                        key = str(offset + i)
                        yield {
                            "sample_id": make_sample_id(spec.name, shard, key),
                            "source": spec.name,
                            "shard_uri": shard_uri,
                            "key": key,
                            "image": image,
                            "text": text,
                        }
                    offset += rb.num_rows
        except FileNotFoundError as err:
            quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"not found: {err}")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, EOFError) as err:
            if is_transient(err) or isinstance(err, PermissionError):
                raise  # not the content's fault: the shard fails and is read again, never cached half-read
            quarantine.add(shard_uri=shard_uri, reason="unreadable_shard", detail=f"{type(err).__name__}: {err}")

    yield from batched(rows(), quarantine, image_check, batch_size)
