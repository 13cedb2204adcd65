"""The embedding cache: one Parquet file per (backbone fingerprint, shard identity).

A shard's identity is its URI plus its size and ETag (S3) or modification time (local disk): an unchanged
shard embedded once with one backbone is never embedded again, whatever the robot set or the estimator. The
samples quarantined while embedding a shard are cached beside it, so a cached run reports the same counts.
The embeddings file is published last and is the entry's completion marker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contracts import ERRORS, embedding_schema
from core.settings import StorageConfig
from core.storage import arrow_filesystem, exists, filesystem, join, write_parquet


def shard_identity(shard_uri: str, storage: StorageConfig | None = None) -> str:
    """A short hash of the shard's URI, size and version (ETag, else modification time)."""
    fs, path = filesystem(shard_uri, storage)
    info = fs.info(path)
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    raw = json.dumps([shard_uri, info.get("size"), str(version)])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class EmbeddingCache:
    """Where embeddings of one backbone live: ``{root}/{fingerprint}/{shard identity}.parquet``."""

    root: str
    fingerprint: str
    storage: StorageConfig | None = None

    def entry(self, shard_uri: str) -> str:
        return join(self.root, self.fingerprint, shard_identity(shard_uri, self.storage))

    def has(self, entry: str) -> bool:
        return exists(entry + ".parquet", self.storage)

    def write(self, entry: str, shard_uri: str, embeddings: pa.Table, errors: pa.Table, dtype: str) -> None:
        """Publish one shard's embeddings (``embedding`` as float32 rows) and its quarantined samples."""
        dim = embeddings.schema.field("embedding").type.list_size
        arrow_dtype = pa.float16() if dtype == "float16" else pa.float32()
        schema = embedding_schema(dim, dtype=arrow_dtype, fingerprint=self.fingerprint)
        schema = schema.with_metadata({**schema.metadata, b"shard_uri": shard_uri.encode()})
        vectors = pc.cast(embeddings["embedding"], pa.list_(arrow_dtype, dim))
        table = pa.table([embeddings["sample_id"], embeddings["source"], embeddings["key"], vectors], schema=schema)
        write_parquet(errors.cast(ERRORS), entry + ".errors.parquet", self.storage)
        # No dictionary encoding: vectors never repeat, and decoding dictionaries made cache reads ~5x slower.
        write_parquet(table, entry + ".parquet", self.storage, use_dictionary=False)  # last: marks it complete

    def read(self, entry: str, columns: list[str] | None = None) -> pa.Table:
        fs, path = arrow_filesystem(entry + ".parquet", self.storage)
        return pq.read_table(path, filesystem=fs, columns=columns)

    def read_errors(self, entry: str) -> pa.Table:
        fs, path = arrow_filesystem(entry + ".errors.parquet", self.storage)
        return pq.read_table(path, filesystem=fs)


def vectors(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column as a float32 matrix [rows, dim] (no per-row Python objects)."""
    column = table["embedding"].combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
