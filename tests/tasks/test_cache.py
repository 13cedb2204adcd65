"""Cache entries are written in bounded row groups; a few rows are read from the groups that hold them alone."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contracts import ERRORS
from core.location import Location
from tasks.cache import ROW_GROUP_ROWS, CacheEntry, EmbeddingCache, entry_row_counts
from tasks.executor import RetryPolicy


def embeddings(n: int, dim: int = 4) -> pa.Table:
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], dim, axis=1)  # row i holds i: rows tell themselves apart
    return pa.table({"key": [f"{i:06d}" for i in range(n)],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)})


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
