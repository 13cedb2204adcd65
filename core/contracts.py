"""The product's data contracts: one Arrow schema per record type, versioned together.

Every stage reads and writes these schemas; nothing else in the code base spells a contract's columns.
Bump ``CONTRACT_VERSION`` when a schema changes incompatibly; it is written into every file's metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

CONTRACT_VERSION = "1"

SAMPLE = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),  # stable: source/shard/key
        pa.field("source", pa.string(), nullable=False),
        pa.field("shard_uri", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),  # member key within the shard, or row index
        pa.field("image", pa.binary(), nullable=False),  # encoded JPEG/PNG/WebP bytes
        pa.field("text", pa.string(), nullable=False),  # caption, QA or instruction
        pa.field("meta", pa.string()),  # optional JSON
    ],
    metadata={"contract": "sample", "contract_version": CONTRACT_VERSION},
)

ROBOT_STEP = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("episode_index", pa.int64(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("action", pa.list_(pa.float32()), nullable=False),
        pa.field("state", pa.list_(pa.float32())),
    ],
    metadata={"contract": "robot_step", "contract_version": CONTRACT_VERSION},
)

ERRORS = pa.schema(
    [
        pa.field("sample_id", pa.string()),  # null when the whole shard failed
        pa.field("shard_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # short machine-readable code
        pa.field("detail", pa.string()),  # the exception message, for humans
    ],
    metadata={"contract": "errors", "contract_version": CONTRACT_VERSION},
)

MANIFEST = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("shard_uri", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),  # 0 = closest to robot data
        pa.field("selected", pa.bool_(), nullable=False),
    ],
    metadata={"contract": "manifest", "contract_version": CONTRACT_VERSION},
)


def embedding_schema(dim: int, *, dtype: pa.DataType | None = None, fingerprint: str = "") -> pa.Schema:
    """Schema of an embedding file: one fixed-size vector per sample, tagged with the backbone fingerprint.

    ``key`` rides along so a manifest can be written from embeddings alone (sample_id = source/shard/key).
    """
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(dtype or pa.float16(), dim), nullable=False),
        ],
        metadata={
            "contract": "embedding",
            "contract_version": CONTRACT_VERSION,
            "backbone_fingerprint": fingerprint,
            "dim": str(dim),
        },
    )


def cached_embedding_schema(dim: int, *, dtype: pa.DataType | None = None, fingerprint: str = "") -> pa.Schema:
    """Schema of an embedding cache entry: the embedding contract without the source's name (``sample_id``,
    ``source``), so one shard read the same way is cached once whatever its source is called; a reader of the
    cache applies ``make_sample_id(source, shard, key)``."""
    full = embedding_schema(dim, dtype=dtype, fingerprint=fingerprint)
    return pa.schema([full.field("key"), full.field("embedding")], metadata=full.metadata)


def make_sample_id(source: str, shard: str, key: str) -> str:
    """The stable id of a sample: the same wherever the corpus is stored (shard is relative to the source root)."""
    return f"{source}/{shard}/{key}"


def table_from_rows(rows: Iterable[Mapping], schema: pa.Schema) -> pa.Table:
    """Build a table of ``schema`` from row dicts (missing optional columns become null)."""
    rows = list(rows)
    return pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
