"""The fit's pool sample: uniform for a small pool (the draw it always had), a bounded block sample for a large one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.contracts import ERRORS
from core.location import Location
from tasks import score
from tasks.block_sample import BLOCK_ROWS
from tasks.cache import EmbeddingCache
from tasks.score import CachedShard, load_features


def pool(tmp_path, sizes: list[int]) -> tuple[EmbeddingCache, list[CachedShard]]:
    """Entries whose row at pool position p holds p in every column."""
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="fp")
    shards, offset = [], 0
    for i, n in enumerate(sizes):
        x = np.repeat(np.arange(offset, offset + n, dtype=np.float32)[:, None], 2, axis=1)
        table = pa.table({"key": [str(j) for j in range(n)],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 2)})
        entry = cache.at(f"{cache.root}/fp/{i:03d}")
        shard = CachedShard(source="s", shard_uri=f"mem://{i}", shard=str(i), entry=entry)
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
        offset += n
    return cache, shards


def test_a_small_pool_keeps_the_uniform_draw(tmp_path):
    cache, shards = pool(tmp_path, [300, 500])
    got = load_features(shards, max_rows=250, seed=3)[:, 0].astype(int)
    expected = np.sort(np.random.default_rng(3).choice(800, size=250, replace=False))
    np.testing.assert_array_equal(got, expected)
    assert len(load_features(shards)) == 800


def test_a_large_pool_reads_a_bounded_number_of_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(score, "SPREAD", 2)
    cache, shards = pool(tmp_path, [3 * BLOCK_ROWS] * 8)  # 24 row groups; SPREAD × 300 rows fit in one
    got = load_features(shards, max_rows=300, seed=0)[:, 0].astype(int)
    assert len(got) == 300 and len(np.unique(got)) == 300
    assert len(np.unique(got // BLOCK_ROWS)) == 1  # one row group read (each entry holds three whole ones)
    again = load_features(shards, max_rows=300, seed=0)[:, 0].astype(int)
    np.testing.assert_array_equal(got, again)
    other = load_features(shards, max_rows=300, seed=1)[:, 0].astype(int)
    assert not np.array_equal(got, other)
