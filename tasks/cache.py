"""The embedding cache: one Parquet file per (backbone fingerprint, shard identity, read settings).

A shard's identity is its URI plus its size and ETag (S3) or modification time (local disk); the read settings
are every source setting that changes what is read from it (format, columns, camera, frame stride — all but the
source's name and listing URI). So an unchanged shard read the same way with one backbone is embedded once,
whatever the robot set, the estimator or the source's *name*: the entry holds shard-relative keys, and the
source name and sample_id prefix are applied when the entry is read for a run (``sample_ids``).
The samples quarantined while reading and embedding a shard are cached beside it, so a cached run reports the
same counts. The embeddings file is published last but one and is the entry's completion marker; after it the writer
publishes the entry's counts (``EntryCounts``: its rows and quarantined rows), so a run learns what a cached entry holds
from one small object, never from the entry's footers. It is written in row groups of
``ROW_GROUP_ROWS`` rows, so a sample of a few rows reads only the groups holding them (``read_vectors``); entries
written before that hold one row group and read the same, whole.

An entry also holds each sample's location in its shard (``core.contracts.LOCATION``), which the manifest carries.
Entries written before locations existed lack those columns and stay valid — their vectors are what a new entry
would hold — so the cache key did not change with them: ``read_keys`` gives such an entry null locations, and its
samples are read back from the whole shard. To get locations for them, delete the entries (``{root}/{fingerprint}``)
and embed again.
Likewise each sample's ``content_hash`` (``core.contracts.CONTENT_HASH``, for exact-copy dedup): an entry written
before it has none (``read_hashes`` gives ``None``), and its samples get semantic dedup only.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts import CONTENT_HASH, ERRORS, LOCATION, cached_embedding_schema, conform, make_sample_id
from core.lease import Lease
from core.location import Location
from core.settings import SourceSpec, StorageConfig
from core.storage import filesystem, object_version, take_rows
from tasks.executor import Threads, map_ordered

ROW_GROUP_ROWS = 1024  # ~1 MB of 512-d float16: a sampled row reads one such group; whole reads are as fast
T, R = TypeVar("T"), TypeVar("R")
LEASE_STALE_AFTER = 300.0  # seconds without a heartbeat before an embedding worker is taken for dead
READ_THREADS = 16  # footers or sampled row groups read at once: on S3 each is a round trip


def shard_identity(shard_uri: str, storage: StorageConfig | None = None) -> str:
    """A short hash of the shard's URI, size and version (ETag, else modification time)."""
    fs, path = filesystem(shard_uri, storage)
    info = fs.info(path)
    raw = json.dumps([shard_uri, info.get("size"), object_version(info)])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def read_settings(spec: SourceSpec) -> dict:
    """What decides the rows read from a shard: every setting of the source but its name and listing URI."""
    return spec.model_dump(mode="json", exclude={"name", "uri"})


def local_ids(sample_ids: pa.Array | pa.ChunkedArray, source: str) -> pa.Array:
    """Sample ids without the ``{source}/`` prefix (null stays null): what the cache may hold."""
    return pc.utf8_slice_codeunits(sample_ids, len(source) + 1)


def sample_ids(source: str, shard: str, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The run's sample ids for a cached shard's keys: ``make_sample_id(source, shard, key)``."""
    return pc.binary_join_element_wise(make_sample_id(source, shard, ""), keys, "")


@dataclass(frozen=True)
class EntryCounts:
    """What the worker that wrote an entry knew: vectors it holds and quarantined rows beside it, by reason. The
    driver adds these up instead of reading every entry's footers (a round trip each on S3)."""

    rows: int
    quarantined: dict[str, int]

    @property
    def errors(self) -> int:
        return sum(self.quarantined.values())


@dataclass(frozen=True)
class CacheEntry:
    """One shard's entry: ``{prefix}.parquet`` (its vectors by key, published last but one: the entry exists once it
    does), ``.errors.parquet`` (its quarantined rows), ``.counts.json`` (``EntryCounts``) and, while a worker embeds
    it, ``.lease.json``. Callers read it through these methods, never by extending its prefix."""

    prefix: Location

    @property
    def uri(self) -> str:
        """The prefix's URI: what a run records to find the entry again (``EmbeddingCache.at``)."""
        return self.prefix.uri

    @property
    def _vectors(self) -> Location:
        return self.prefix.with_suffix(".parquet")

    @property
    def _errors(self) -> Location:
        return self.prefix.with_suffix(".errors.parquet")

    def exists(self) -> bool:
        return self._vectors.exists()

    def counts(self) -> EntryCounts | None:
        """The entry's counts, or ``None`` if it is not cached: one small read, or the footers of an entry written
        before counts were kept (or whose writer died between its last two objects)."""
        try:
            return EntryCounts(**json.loads(self.prefix.with_suffix(".counts.json").read_bytes()))
        except FileNotFoundError:
            if not self.exists():
                return None
        reasons = self._errors.read_parquet(["reason"])["reason"].to_pylist()
        return EntryCounts(rows=self.rows(), quarantined=dict(Counter(reasons)))

    def claim(self) -> AbstractContextManager[None]:
        """Hold the entry's lease while embedding it (``core.lease``; ``LeaseHeld`` if a live worker of any run
        holds it), so two runs on one cache embed a shard once; a dead holder's lease is taken over."""
        lease = self.prefix.with_suffix(".lease.json")
        return Lease(lease.uri, lease.storage, stale_after=LEASE_STALE_AFTER).held()

    def row_groups(self) -> list[int]:
        """Rows per row group of the entry, from its footer."""
        with self._vectors.parquet_file() as pf:
            return [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]

    def rows(self) -> int:
        """Vectors the entry holds, from its footer."""
        return sum(self.row_groups())

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return self._vectors.read_parquet(columns)

    def read_vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The entry's vectors as float32 [n, dim]: every row, or those at ``rows`` (sorted, unique row indices),
        reading only the row groups that hold them."""
        if rows is None:
            return vectors(self.read(["embedding"]))
        with self._vectors.parquet_file() as pf:
            return vectors(take_rows(pf, rows, ["embedding"]))

    def read_keys(self) -> pa.Table:
        """The entry's ``key`` and location columns (null locations for an entry written before they existed).

        ``key`` comes as ``read(["key"])`` gives it, so the sample ids built on it hash as before."""
        with self._vectors.parquet_file() as pf:  # not pyarrow.dataset: its set-up cost 3x this read
            names = pf.schema_arrow.names
            table = pf.read(["key", *(n for n in LOCATION.names if n in names)])
        return conform(table, LOCATION).add_column(0, "key", table["key"])

    def read_hashes(self) -> np.ndarray | None:
        """The entry's ``content_hash`` column as int64, or ``None`` if it has none (written before hashes were
        kept, or by a writer that had no image bytes)."""
        with self._vectors.parquet_file() as pf:
            if CONTENT_HASH.name not in pf.schema_arrow.names:
                return None
            hashes = pf.read([CONTENT_HASH.name])[CONTENT_HASH.name]
        return None if hashes.null_count else hashes.to_numpy()

    def read_errors(self, source: str) -> pa.Table:
        """The entry's quarantined rows with ``source``'s sample ids."""
        errors = self._errors.read_parquet()
        prefixed = pc.binary_join_element_wise(f"{source}/", errors["sample_id"], "")
        return errors.set_column(errors.schema.get_field_index("sample_id"), "sample_id", prefixed)


@dataclass(frozen=True)
class EmbeddingCache:
    """Where embeddings of one backbone live: ``{root}/{fingerprint}/{entry key}.parquet``."""

    root: Location
    fingerprint: str

    def entry(self, spec: SourceSpec, shard_uri: str, screen: str | None = None) -> CacheEntry:
        """The entry for ``shard_uri`` read with ``spec``'s settings and, when set, screened by the filters whose
        key is ``screen`` (``tasks.filters.screen.ScreenPlan.key``: the lists' content and the thresholds). Raises
        FileNotFoundError for no shard. Without a screen the key is what it always was, so old entries stay valid."""
        key = [shard_identity(shard_uri, self.root.storage), read_settings(spec)] + ([screen] if screen else [])
        raw = json.dumps(key, sort_keys=True)
        return CacheEntry(self.root.join(self.fingerprint, hashlib.sha256(raw.encode()).hexdigest()[:24]))

    def at(self, uri: str) -> CacheEntry:
        """The entry a run recorded by its ``uri``, on this cache's storage."""
        return CacheEntry(Location(uri, self.root.storage))

    def write(
        self, entry: CacheEntry, shard_uri: str, embeddings: pa.Table, errors: pa.Table, dtype: str
    ) -> EntryCounts:
        """Publish one shard's embeddings (``key`` + ``embedding``, and the location and content hash columns, null
        where absent), its quarantined samples (sample ids relative to the source, see ``local_ids``) and their
        counts."""
        dim = embeddings.schema.field("embedding").type.list_size
        arrow_dtype = pa.float16() if dtype == "float16" else pa.float32()
        schema = cached_embedding_schema(dim, dtype=arrow_dtype, fingerprint=self.fingerprint)
        schema = schema.with_metadata({**schema.metadata, b"shard_uri": shard_uri.encode()})
        vectors = pc.cast(embeddings["embedding"], schema.field("embedding").type)
        located = {f.name: embeddings[f.name] for f in [*LOCATION, CONTENT_HASH] if f.name in embeddings.column_names}
        table = conform(pa.table({"key": embeddings["key"], "embedding": vectors, **located}), schema)
        entry._errors.write_parquet(errors.cast(ERRORS))
        # No dictionary encoding: vectors never repeat, and decoding dictionaries made cache reads ~5x slower.
        entry._vectors.write_parquet(table, use_dictionary=False,  # last but one: marks it complete
                                     row_group_size=ROW_GROUP_ROWS)
        counts = EntryCounts(rows=table.num_rows, quarantined=dict(Counter(errors["reason"].to_pylist())))
        entry.prefix.with_suffix(".counts.json").publish_bytes(json.dumps(counts.__dict__).encode())
        return counts


def threaded(fn: Callable[[T], R], items: list[T], threads: int = READ_THREADS) -> Iterator[R]:
    """``map(fn, items)`` on the executor's threads, ``threads`` calls in flight (results in order, streamed): for
    reads that wait on storage or decode outside the GIL. A transient fault is retried under the executor's policy;
    any other error is raised as it came, noted with the item it was reading."""
    return map_ordered(Threads(workers=threads), fn, items)


def entry_row_counts(entries: list[CacheEntry]) -> list[int]:
    """Rows of each entry, from footers read ``READ_THREADS`` at a time (the cost is per entry, not per row)."""
    return list(threaded(CacheEntry.rows, entries))


def vectors(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column as a float32 matrix [rows, dim] (no per-row Python objects)."""
    column = table["embedding"].combine_chunks()
    dim, values = column.type.list_size, column.flatten()
    if pa.types.is_float16(values.type) and len(values) and not values.null_count:
        return _widened(values).reshape(-1, dim)
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def _widened(values: pa.Array) -> np.ndarray:
    """float16 values as float32, converted by torch: its conversion is vectorised (F16C/AVX) where numpy's
    ``astype`` converts one value at a time, 7x slower and a third of reading a cache entry. The same bits either
    way (NaN, infinities and subnormals included)."""
    import torch  # here, not at the top: only float16 vectors need it, and importing it costs ~1 s

    data = values.buffers()[1]
    if not data.is_mutable:  # torch wants a writable buffer, though it only reads this one
        data = pa.py_buffer(bytearray(data))
    half = torch.frombuffer(data, dtype=torch.float16, count=len(values), offset=2 * values.offset)
    return half.to(torch.float32).numpy()
