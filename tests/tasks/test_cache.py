"""Cache entries are written in bounded row groups; a few rows are read from the groups that hold them alone."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contracts import ERRORS
from core.location import Location
from tasks.cache import ROW_GROUP_ROWS, CacheEntry, EmbeddingCache, _widened, entry_row_counts, vectors
from tasks.executor import RetryPolicy


def embeddings(n: int, dim: int = 4) -> pa.Table:
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1)  # row i holds i: rows tell themselves apart
    return pa.table({"key": [f"{i:06d}" for i in range(n)],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)})


@pytest.mark.filterwarnings("error")  # torch warns when given a read-only buffer
def test_float16_vectors_widen_to_the_bits_numpy_gives(tmp_path):
    """Widened by torch (vectorised), float16 vectors equal numpy's one-at-a-time astype bit for bit: specials,
    subnormals, slices at any offset, several chunks, no rows, and a table read back from a cache entry."""
    x = np.random.default_rng(0).standard_normal((2 * ROW_GROUP_ROWS + 3, 6)).astype(np.float16)
    x[0, :5] = [np.nan, np.inf, -np.inf, 6e-8, -0.0]  # 6e-8: a float16 subnormal
    table = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6)})

    def bits(m: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(m, np.float32).view(np.uint32)

    two_chunks = pa.concat_tables([table.slice(0, 5), table.slice(900, 50)])
    for part, rows in [(table, x), (table.slice(7, 100), x[7:107]), (table.slice(0, 0), x[:0]),
                       (two_chunks, np.concatenate([x[:5], x[900:950]]))]:
        got = vectors(part)
        assert got.dtype == np.float32 and got.shape == rows.shape
        np.testing.assert_array_equal(bits(got), bits(rows.astype(np.float32)))
    values = table["embedding"].chunk(0).slice(7, 100).flatten()  # values that start inside their buffer
    assert values.offset == 42
    np.testing.assert_array_equal(bits(_widened(values)), bits(x[7:107].ravel().astype(np.float32)))
    frozen = pa.Array.from_buffers(pa.float16(), x.size, [None, pa.py_buffer(x.tobytes())])  # a read-only buffer
    np.testing.assert_array_equal(bits(_widened(frozen)), bits(x.ravel().astype(np.float32)))
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="fp")
    entry = cache.at(f"{cache.root}/fp/e")
    cache.write(entry, "shard", table.add_column(0, "key", pa.array([f"{i}" for i in range(len(x))])),
                ERRORS.empty_table(), "float16")
    np.testing.assert_array_equal(bits(entry.read_vectors()), bits(x.astype(np.float32)))
    np.testing.assert_array_equal(bits(entry.read_vectors(np.array([1, ROW_GROUP_ROWS + 1]))),
                                  bits(x[[1, ROW_GROUP_ROWS + 1]].astype(np.float32)))


def test_entries_store_non_null_values_and_entries_written_before_read_the_same(tmp_path):
    """A cache entry declares its vectors' values non-null (Parquet then keeps no definition levels for them); an
    entry written before, with nullable values, reads the same vectors."""
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float16)
    table = pa.table({"key": [f"{i}" for i in range(50)],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 4)})
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="fp")
    new, old = cache.at(f"{cache.root}/fp/new"), cache.at(f"{cache.root}/fp/old")
    cache.write(new, "shard", table, ERRORS.empty_table(), "float16")
    column = pq.ParquetFile(tmp_path / "fp" / "new.parquet").schema.column(1)
    assert column.max_definition_level == 1  # the list's level only: none per value
    assert not new.read(["embedding"]).schema.field("embedding").type.value_field.nullable
    cache.write(old, "shard", table, ERRORS.empty_table(), "float16")
    written = pq.read_table(tmp_path / "fp" / "old.parquet")
    nullable = pa.list_(pa.float16(), 4)
    pq.write_table(written.set_column(1, pa.field("embedding", nullable, nullable=False),
                                      written["embedding"].cast(nullable)), tmp_path / "fp" / "old.parquet")
    assert pq.ParquetFile(tmp_path / "fp" / "old.parquet").schema.column(1).max_definition_level == 2
    np.testing.assert_array_equal(old.read_vectors(), x.astype(np.float32))
    np.testing.assert_array_equal(new.read_vectors(), x.astype(np.float32))
    np.testing.assert_array_equal(old.read_vectors(np.array([3, 40])), x[[3, 40]].astype(np.float32))


def test_rows_come_from_the_groups_holding_them(tmp_path, monkeypatch):
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="fp")
    entry = cache.at(f"{cache.root}/fp/e")
    n = 3 * ROW_GROUP_ROWS + 10
    cache.write(entry, "shard", embeddings(n), ERRORS.empty_table(), "float32")
    assert entry.row_groups() == [ROW_GROUP_ROWS] * 3 + [10]
    read_groups = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, **kw: read_groups.append(list(groups)) or real(self, groups, **kw))
    rows = np.array([0, 5, 3 * ROW_GROUP_ROWS + 9])
    assert entry.read_vectors(rows)[:, 0].tolist() == rows.tolist()
    assert read_groups == [[0, 3]]
    with pytest.raises(IndexError):
        entry.read_vectors(np.array([n]))
    assert entry_row_counts([entry, entry]) == [n, n]


def test_an_entry_written_as_one_row_group_reads_the_same(tmp_path):
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="fp")
    entry = cache.at(f"{cache.root}/fp/old")
    (tmp_path / "fp").mkdir()
    pq.write_table(embeddings(2500), entry.uri + ".parquet")  # one row group, as entries were written before
    assert entry.row_groups() == [2500]
    assert entry.read_vectors(np.array([7, 2499]))[:, 0].tolist() == [7, 2499]


def test_footer_reads_retry_a_transient_fault_and_name_the_entry_of_any_other(tmp_path, monkeypatch):
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="fp")
    entries = [cache.at(f"{cache.root}/fp/{name}") for name in ("a", "b")]
    for entry in entries:
        cache.write(entry, "shard", embeddings(3), ERRORS.empty_table(), "float32")
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 0.0)
    real, calls = CacheEntry.row_groups, Counter()

    def flaky(self):
        calls[self] += 1
        if self == entries[1] and calls[self] == 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(self)

    monkeypatch.setattr(CacheEntry, "row_groups", flaky)
    assert entry_row_counts(entries) == [3, 3] and calls[entries[1]] == 2  # read again, not lost
    missing = cache.at(f"{cache.root}/fp/gone")
    with pytest.raises(FileNotFoundError) as err:
        entry_row_counts([*entries, missing])
    assert calls[missing] == 1 and err.value.__notes__ == [f"while working on unit {missing}"]
