from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.contracts import ERRORS
from core.manifest import read_manifest, read_sidecar
from estimator.baselines import MeanDistanceScorer
from tasks import curation
from tasks import score_ranges as sr
from tasks.cache import EmbeddingCache
from tasks.distributed_select import DistributedSelection, score_select_write
from tasks.score import CachedShard, manifest_parts, score_pool


def test_order_keys_sort_as_scores_and_refuse_nan():
    scores = np.array([-2.5, -0.0, 0.0, 1e-30, 0.5, -1e-30, 3.0], np.float32)
    keys = sr.order_keys(scores)
    assert np.array_equal(np.argsort(keys, kind="stable"), np.argsort(scores, kind="stable"))
    assert keys[1] == keys[2]  # -0.0 ties with 0.0, as argsort sees them
    with pytest.raises(ValueError, match="NaN"):
        sr.order_keys(np.array([0.1, np.nan], np.float32))


def test_ranges_cover_every_row_from_the_top():
    keys = sr.order_keys(np.random.default_rng(0).standard_normal(1000).astype(np.float32))
    ranges = sr.plan_ranges(sr.histogram(keys), 4)
    assert [r.offset for r in ranges] == list(np.cumsum([0] + [r.rows for r in ranges[:-1]]))
    assert sum(r.rows for r in ranges) == 1000 and ranges[0].high == sr.BINS
    assert all(a.low == b.high for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.fixture(scope="module")
def tied_cache(tmp_path_factory) -> tuple[EmbeddingCache, list[CachedShard]]:
    """7 shards over 2 sources (one shard empty), vectors drawn from 5 distinct rows: many equal scores."""
    cache = EmbeddingCache(root=str(tmp_path_factory.mktemp("cache")), fingerprint="fp")
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((5, 8)).astype(np.float32)
    shards = []
    for i, rows in enumerate([40, 0, 33, 50, 7, 61, 25]):
        source = ("web", "vqa")[i % 2]
        shard = CachedShard(source=source, shard_uri=f"/data/{source}/{i:03d}.tar", shard=f"{i:03d}.tar",
                            entry=f"{cache.root}/fp/{i:03d}")
        x = distinct[rng.integers(0, 5, rows)]
        table = pa.table({"key": [f"{j:04d}" for j in range(rows)],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)})
        if source == "web":  # tar spans in the entry (the other source's entries predate locations: null)
            table = table.append_column("byte_offset", pa.array(range(0, 1024 * rows, 1024), pa.int64()))
            table = table.append_column("byte_length", pa.array([1024] * rows, pa.int64()))
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
    return cache, shards


def test_distributed_manifest_is_the_one_process_manifest_whatever_the_cut(ray_local, tied_cache, tmp_path):
    cache, shards = tied_cache
    scorer = MeanDistanceScorer(np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32))

    scores = score_pool(cache, shards, scorer)
    chosen = curation.select(scores, k=30, fraction=None, per_source_cap=None)
    expected = pa.concat_tables(manifest_parts(cache, shards, scores.scores, chosen.ranks, chosen.chosen))
    assert len(np.unique(scores.scores)) == 5  # ties everywhere: pool order must break them
    web = pc.equal(expected["source"], "web")
    assert expected.filter(web)["byte_length"].null_count == 0  # locations ride from the cache to the manifest
    assert expected.filter(pc.invert(web))["byte_offset"].null_count == expected.num_rows - pc.sum(web).as_py()

    sidecars, tables = {}, {}
    for name, options in {
        "one": DistributedSelection(shards_per_file=3, workers=1, ranges=1),
        "many": DistributedSelection(shards_per_file=3, workers=2, ranges=5, cpus=0.5),
        "other_files": DistributedSelection(shards_per_file=2, workers=2, ranges=3, cpus=0.5),
    }.items():
        uri = str(tmp_path / name / "manifest.parquet")
        sidecars[name] = score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=uri,
                                            sidecar={"run": name}, k=30, fraction=None, options=options)
        tables[name] = read_manifest(uri)
        assert read_sidecar(uri)["content_sha256"] == sidecars[name]["content_sha256"]
        assert not (tmp_path / name / "manifest.parquet.scratch").exists()

    for name, table in tables.items():
        assert table.equals(expected.cast(table.schema)), name
    assert len({s["content_sha256"] for s in sidecars.values()}) == 1
    one, many = (tmp_path / n / "manifest.parquet" for n in ("one", "many"))
    assert sidecars["one"]["files"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for f in sidecars["one"]["files"]:  # same files for the same shards_per_file: bit for bit
        assert (one / f).read_bytes() == (many / f).read_bytes()
    assert sidecars["one"]["selected"] == 30 and sidecars["one"]["rows"] == 216
    counts = expected.group_by("source").aggregate([("sample_id", "count"), ("selected", "sum")]).to_pylist()
    assert sidecars["one"]["per_source"] == {
        c["source"]: {"pool": c["sample_id_count"], "selected": c["selected_sum"]} for c in counts
    }
    assert pq.read_table(one).num_rows == 216  # the directory reads in one line
