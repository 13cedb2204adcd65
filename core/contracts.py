"""The product's data contracts: one Arrow schema per record type, versioned together.

Every stage reads and writes these schemas; nothing else in the code base spells a contract's columns.
Bump ``CONTRACT_VERSION`` when a schema changes incompatibly; it is written into every file's metadata.

The *location* columns (``LOCATION``: ``byte_offset``, ``byte_length``, ``row_group``) were added to the sample,
cached-embedding and manifest contracts without a version bump: they are nullable and only added, so a file written
before them still reads (``conform`` gives it null locations, which every consumer takes as "read the whole shard"),
and an embedding cache filled before them stays valid (its vectors are the same; bumping would have re-embedded
every shard a user has cached just to learn where samples sit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

CONTRACT_VERSION = "1"

# Where a sample's bytes are within its shard, so a consumer fetches one sample with a range read. Null = unknown
# (an older cache or manifest, or a format without locations: LeRobot); the consumer then reads the whole shard.
LOCATION = pa.schema(
    [
        # WebDataset tar: the sample's span, from its first member's header (long-name / pax headers included) to the
        # end of its last member's data padded to the 512-byte block; the span alone is a tar stream of its members.
        pa.field("byte_offset", pa.int64()),
        pa.field("byte_length", pa.int64()),
        # Parquet: the row group holding the row; the row within it is ``key`` (the file row index) minus the rows of
        # the groups before it, which the file's footer gives.
        pa.field("row_group", pa.int32()),
    ]
)
LOCATION_NAMES = tuple(LOCATION.names)
# The first 8 bytes of the SHA-256 of a sample's encoded image, as a signed big-endian int64: what exact-copy dedup
# compares (a chance collision in a pool of 10^9 is about 3 in 100). Null = unknown (an entry cached before it).
CONTENT_HASH = pa.field("content_hash", pa.int64())

SAMPLE = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),  # stable: source/shard/key
        pa.field("source", pa.string(), nullable=False),
        pa.field("shard_uri", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),  # member key within the shard, or row index
        pa.field("image", pa.binary(), nullable=False),  # encoded JPEG/PNG/WebP bytes
        pa.field("text", pa.string(), nullable=False),  # caption, QA or instruction
        pa.field("meta", pa.string()),  # optional JSON
        *LOCATION,
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
        *LOCATION,
    ],
    metadata={"contract": "manifest", "contract_version": CONTRACT_VERSION},
)


def vector_type(dim: int, dtype: pa.DataType | None = None) -> pa.DataType:
    """An embedding vector: ``dim`` values of ``dtype`` (float16 by default), none of them null. Declaring the values
    non-null lets Parquet store them without definition levels: a cache entry of float16 vectors reads ~1.8x
    faster. Files written with nullable values (before) read the same."""
    return pa.list_(pa.field("item", dtype or pa.float16(), nullable=False), dim)


def embedding_schema(dim: int, *, dtype: pa.DataType | None = None, fingerprint: str = "") -> pa.Schema:
    """Schema of an embedding file: one fixed-size vector per sample, tagged with the backbone fingerprint.

    ``key`` rides along so a manifest can be written from embeddings alone (sample_id = source/shard/key).
    """
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("embedding", vector_type(dim, dtype), nullable=False),
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
    cache applies ``make_sample_id(source, shard, key)``. The sample's ``LOCATION`` rides along for the manifest and
    its ``CONTENT_HASH`` for exact-copy dedup (entries written before them lack those columns: read them with
    ``conform``)."""
    full = embedding_schema(dim, dtype=dtype, fingerprint=fingerprint)
    return pa.schema([full.field("key"), full.field("embedding"), *LOCATION, CONTENT_HASH], metadata=full.metadata)


def make_sample_id(source: str, shard: str, key: str) -> str:
    """The stable id of a sample: the same wherever the corpus is stored (shard is relative to the source root)."""
    return f"{source}/{shard}/{key}"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns of ``schema``, in its order and types; a nullable column it lacks (a location, in a file
    written before locations existed) becomes nulls."""
    columns = {
        f.name: table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    }
    return pa.table(columns).cast(schema)


def table_from_rows(rows: Iterable[Mapping], schema: pa.Schema) -> pa.Table:
    """Build a table of ``schema`` from row dicts (missing optional columns become null)."""
    rows = list(rows)
    return pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
