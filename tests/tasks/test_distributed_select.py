"""The selection engine (``tasks.distributed_select``) against an independent expectation (``selection_expect``:
a plain numpy ranking and walk of the same scores), and the same manifest whatever the workers, ranges or files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.contracts import ERRORS
from core.location import Location
from core.manifest import read_manifest, read_sidecar
from estimator.baselines import MeanDistanceScorer
from estimator.features import ColumnScorer
from tasks import score_ranges as sr
from tasks.cache import EmbeddingCache
from tasks.distributed_select import DistributedSelection, score_select_write
from tasks.score import CachedShard
from tasks.select import SelectionConfig
from tests.tasks.selection_expect import expected_manifest


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
    cache = EmbeddingCache(root=Location(str(tmp_path_factory.mktemp("cache"))), fingerprint="fp")
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((5, 8)).astype(np.float32)
    shards = []
    for i, rows in enumerate([40, 0, 33, 50, 7, 61, 25]):
        source = ("web", "vqa")[i % 2]
        shard = CachedShard(source=source, shard_uri=f"/data/{source}/{i:03d}.tar", shard=f"{i:03d}.tar",
                            entry=cache.at(f"{cache.root}/fp/{i:03d}"))
        x = distinct[rng.integers(0, 5, rows)]
        table = pa.table({"key": [f"{j:04d}" for j in range(rows)],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8)})
        if source == "web":  # tar spans in the entry (the other source's entries predate locations: null)
            table = table.append_column("byte_offset", pa.array(range(0, 1024 * rows, 1024), pa.int64()))
            table = table.append_column("byte_length", pa.array([1024] * rows, pa.int64()))
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
    return cache, shards


def test_top_k_manifest_is_a_plain_ranking_whatever_the_cut(ray_local, tied_cache, tmp_path):
    cache, shards = tied_cache
    scorer = MeanDistanceScorer(np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32))

    expected, _ = expected_manifest(cache, shards, scorer, 30)
    assert len(np.unique(expected["score"].to_numpy())) == 5  # ties everywhere: pool order must break them
    web = pc.equal(expected["source"], "web")
    assert expected.filter(web)["byte_length"].null_count == 0  # locations ride from the cache to the manifest
    assert expected.filter(pc.invert(web))["byte_offset"].null_count == expected.num_rows - pc.sum(web).as_py()

    sidecars, tables = {}, {}
    for name, options in {
        "one": DistributedSelection(shards_per_file=3, workers=1, ranges=1),
        "in_process": DistributedSelection(shards_per_file=3, in_process=True),
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
    one, many, local = (tmp_path / n / "manifest.parquet" for n in ("one", "many", "in_process"))
    assert sidecars["one"]["files"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for f in sidecars["one"]["files"]:  # same files for the same shards_per_file, on Ray or not: bit for bit
        assert (one / f).read_bytes() == (many / f).read_bytes() == (local / f).read_bytes()
    assert sidecars["one"]["selected"] == 30 and sidecars["one"]["rows"] == 216
    assert sidecars["one"]["selection"] == SelectionConfig().record()
    counts = expected.group_by("source").aggregate([("sample_id", "count"), ("selected", "sum")]).to_pylist()
    assert sidecars["one"]["per_source"] == {
        c["source"]: {"pool": c["sample_id_count"], "selected": c["selected_sum"]} for c in counts
    }
    assert pq.read_table(one).num_rows == 216  # the directory reads in one line


COPIES = 14  # rows of the pool that carry one image (columns 0:4) beside different texts (columns 4:8)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[EmbeddingCache, list[CachedShard], ColumnScorer]:
    """7 shards over 3 sources (one shard empty), 190 samples; a scorer of the image columns to which the planted
    copies score high, so the draw meets them often, and "web" holds more good samples than its cap."""
    cache = EmbeddingCache(root=Location(str(tmp_path_factory.mktemp("mixed"))), fingerprint="fp")
    rng = np.random.default_rng(7)
    robot = rng.standard_normal((3, 4)).astype(np.float32)
    x = rng.standard_normal((190, 8)).astype(np.float32)
    x[:60:2, :4] = robot[0] + 0.3 * rng.standard_normal((30, 4))  # web's first shards: near the robot
    x[rng.choice(190, COPIES, replace=False), :4] = robot[1] + 0.05
    shards, start = [], 0
    for i, rows in enumerate([30, 30, 0, 40, 35, 25, 30]):
        source = ("web", "web", "vqa", "vqa", "docs", "docs", "web")[i]
        shard = CachedShard(source=source, shard_uri=f"/data/{source}/{i}.tar", shard=f"{i}.tar",
                            entry=cache.at(f"{cache.root}/fp/{i}"))
        table = pa.table({"key": [f"{j:03d}" for j in range(rows)], "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(x[start:start + rows].reshape(-1)), 8)})
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
        start += rows
    return cache, shards, ColumnScorer(MeanDistanceScorer(robot), slice(0, 4))


def test_caps_importance_and_dedup_give_one_manifest_on_one_and_three_workers(ray_local, mixed, tmp_path):
    cache, shards, scorer = mixed
    selection = SelectionConfig(mode="importance", seed=5, dedup_threshold=0.95)
    caps = {"web": 8}
    expected, skipped = expected_manifest(cache, shards, scorer, 30, selection=selection, caps=caps)
    chosen = expected.filter(expected["selected"])
    assert skipped > 0 and pc.sum(pc.equal(chosen["source"], "web")).as_py() == 8  # dedup and the cap both bite
    assert chosen["rank"].to_numpy().max() >= 30  # a draw, not the top-K

    sidecars, tables = {}, {}
    for name, options in {
        "one": DistributedSelection(shards_per_file=2, workers=1, ranges=1),
        "in_process": DistributedSelection(shards_per_file=2, in_process=True),
        "three": DistributedSelection(shards_per_file=2, workers=3, ranges=4, cpus=0.5),
        "other_files": DistributedSelection(shards_per_file=3, workers=3, ranges=2, cpus=0.5),
    }.items():
        uri = str(tmp_path / name / "manifest.parquet")
        sidecars[name] = score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=uri, sidecar={},
                                            k=30, fraction=None, selection=selection, per_source_cap=caps,
                                            options=options)
        tables[name] = read_manifest(uri)
        assert not (tmp_path / name / "manifest.parquet.scratch").exists()
    for name, table in tables.items():
        assert table.equals(expected.cast(table.schema)), name
        assert sidecars[name]["selection"] == selection.record(skipped)
        assert sidecars[name]["selected"] == 30 and sidecars[name]["k"] == 30
    assert len({s["content_sha256"] for s in sidecars.values()}) == 1  # workers, ranges and files: one hash
    one, three = (tmp_path / n / "manifest.parquet" for n in ("one", "three"))
    assert sidecars["one"]["files"] == sidecars["three"]["files"] and len(sidecars["one"]["files"]) == 4
    for f in sidecars["one"]["files"]:
        assert (one / f).read_bytes() == (three / f).read_bytes()
    pick = {n: sorted(t.filter(t["selected"])["sample_id"].to_pylist()) for n, t in tables.items()}
    assert pick["one"] == pick["three"] == pick["other_files"]


@pytest.mark.parametrize("change,message", [
    ({"per_source_cap": {"web": 5, "vqa": 5, "docs": 5}}, "per-source caps leave only 15 samples"),
    ({"selection": SelectionConfig(dedup_threshold=0.2)}, "near-duplicate removal"),
])
def test_a_pool_the_rules_leave_short_is_refused(ray_local, mixed, tmp_path, change, message):
    cache, shards, scorer = mixed
    uri = str(tmp_path / "manifest.parquet")
    with pytest.raises(ValueError, match=message):
        score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=uri, sidecar={}, k=30,
                           fraction=None, options=DistributedSelection(shards_per_file=3, workers=1), **change)
    assert not (tmp_path / "manifest.parquet.scratch").exists()
