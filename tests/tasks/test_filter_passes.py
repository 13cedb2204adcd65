"""The vector filters as passes of the selection engine: planted mis-captioned rows (image and text halves that
disagree), rows a user's probe flags, exact copies (one image's bytes in several shards and sources) and near-copies
(re-encoded: other bytes, nearly the same vector) are removed with their stage and reason — pool-wide, the same
whatever the cut — while every sample keeps its manifest row and score. Entries cached before content hashes were
kept get semantic dedup only, and the run counts their samples."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contracts import ERRORS
from core.location import Location
from core.manifest import read_manifest
from estimator.baselines import MeanDistanceScorer
from estimator.features import ColumnScorer
from tasks.cache import EmbeddingCache
from tasks.distributed_select import DistributedSelection, score_select_write
from tasks.filter_passes import vector_filters
from tasks.filters.dedup import DedupConfig
from tasks.filters.quality import ProbeFilterSpec, QualityConfig
from tasks.score import CachedShard

D, HALF = 32, 16
PARTS = {"image": slice(0, HALF), "text": slice(HALF, D)}


def _write_shards(cache: EmbeddingCache, x: np.ndarray, hashes: np.ndarray, *, rows: int = 20,
                  unhashed: tuple[int, ...] = ()) -> tuple[list[CachedShard], dict[int, str]]:
    """``x`` as shards of ``rows`` over two sources, with the content ``hashes``; the ``unhashed`` shards in the
    layout of an entry cached before hashes were kept (no such column). Returns the shards and each row's id."""
    shards, ids = [], {}
    for i, start in enumerate(range(0, len(x), rows)):
        source = ("web", "docs")[i % 2]
        shard = CachedShard(source=source, shard_uri=f"/data/{source}/{i}.tar", shard=f"{i}.tar",
                            entry=cache.at(f"{cache.root}/fp/{i}"))
        table = pa.table({"key": [f"{j:03d}" for j in range(rows)], "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(x[start:start + rows].reshape(-1)), D), "content_hash": hashes[start:start + rows]})
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        if i in unhashed:
            path = f"{cache.root}/fp/{i}.parquet"
            pq.write_table(pq.read_table(path).drop_columns(["content_hash"]), path)
        ids |= {start + j: f"{source}/{i}.tar/{j:03d}" for j in range(rows)}
        shards.append(shard)
    return shards, ids


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[EmbeddingCache, list[CachedShard], dict[str, str], list[set[str]]]:
    """6 shards over 2 sources, 120 samples; the planted ones by sample id -> the reason they must go, and the
    groups of near-copies (one of each stays: SemDeDup keeps the one nearest its cluster's centre)."""
    cache = EmbeddingCache(root=Location(str(tmp_path_factory.mktemp("cache"))), fingerprint="fp")
    rng = np.random.default_rng(3)
    image = rng.standard_normal((120, HALF)).astype(np.float32)
    image[:, 0] = np.clip(image[:, 0], -1, 1)  # the probe (image[0] > 3) flags none of these
    text = image + 0.2 * rng.standard_normal((120, HALF)).astype(np.float32)  # captions that agree
    why: dict[int, str] = {}
    for row in (5, 47, 90):  # captions about something else
        text[row] = -image[row] + 0.1 * rng.standard_normal(HALF)
        why[row] = "quality:clip_score"
    for row in (12, 70):  # what the user's probe is for
        image[row, 0] = text[row, 0] = 6.0
        why[row] = "quality:probe"
    groups = ((20, 41, 103), (33, 95))
    for copies in groups:  # one image re-encoded over shards and sources, a caption a little apart each
        for row in copies[1:]:
            image[row] = image[copies[0]] + 1e-3 * rng.standard_normal(HALF)
            text[row] = text[copies[0]] + 1e-3 * rng.standard_normal(HALF)
    hashes = rng.integers(-(2**63), 2**63 - 1, 120, dtype=np.int64)
    for row in (85, 115):  # row 60's sample (shard 3, docs) re-saved byte for byte in shard 4 (web) and 5 (docs)
        image[row], text[row], hashes[row] = image[60], text[60], hashes[60]
        why[row] = "dedup:exact"  # row 60 stays: equal vectors tie on the walk order, the lowest position first
    shards, ids = _write_shards(cache, np.concatenate([image, text], axis=1), hashes)
    return cache, shards, {ids[row]: reason for row, reason in why.items()}, [{ids[r] for r in g} for g in groups]


def test_planted_rows_are_removed_pool_wide_and_recorded_whatever_the_cut(ray_local, planted, tmp_path):
    cache, shards, why, groups = planted
    weight = np.zeros(HALF, np.float32)
    weight[0] = 10.0
    np.savez(tmp_path / "probe.npz", weight=weight, bias=np.float32(-30.0))
    quality = QualityConfig(min_clip_score=0.5, probes=[ProbeFilterSpec(name="flag", uri=str(tmp_path / "probe.npz"))])
    filters = vector_filters(quality, DedupConfig(enabled=True, threshold=0.99), PARTS, D)
    scorer = ColumnScorer(MeanDistanceScorer(np.zeros((1, HALF), np.float32)), PARTS["image"])
    results = {}
    for name, options in {"one": DistributedSelection(shards_per_file=6, workers=1, ranges=1),
                          "many": DistributedSelection(shards_per_file=2, workers=2, ranges=3, cpus=0.5)}.items():
        uri = str(tmp_path / name / "manifest.parquet")
        sidecar = score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=uri, sidecar={}, k=None,
                                     fraction=1.0, options=options, filters=filters)
        removed = pq.read_table(sidecar["removed_uri"])
        assert removed.schema.equals(ERRORS, check_metadata=False)
        reasons = {r["sample_id"]: r["reason"] for r in removed.to_pylist()}
        dups = {i for i, r in reasons.items() if r == "dedup:semantic"}
        assert {i: r for i, r in reasons.items() if i not in dups} == why
        assert all(len(group - dups) == 1 for group in groups) and dups <= set().union(*groups)
        assert all(r["stage"] == r["reason"].split(":")[0] and r["detail"] == "" for r in removed.to_pylist())
        manifest = read_manifest(uri)
        assert manifest.num_rows == 120  # every sample keeps its row and score
        chosen = set(manifest.filter(manifest["selected"])["sample_id"].to_pylist())
        assert len(chosen) == 120 - len(reasons) == sidecar["selected"]  # fraction 1.0 of what the filters left
        assert chosen.isdisjoint(reasons)
        by_source: dict = {}
        for i, r in reasons.items():
            by_source.setdefault(i.split("/")[0], {}).setdefault(r, 0)
            by_source[i.split("/")[0]][r] += 1
        assert sidecar["filtered"] == by_source and sum(by_source["web"].values()) + sum(
            by_source["docs"].values()) == len(why) + 3
        assert by_source["web"]["dedup:exact"] == by_source["docs"]["dedup:exact"] == 1
        assert sidecar["funnel"]["docs"]["after_quality"] - sidecar["funnel"]["docs"]["after_dedup"] == sum(
            n for r, n in by_source["docs"].items() if r.startswith("dedup:"))
        assert sidecar["dedup_unhashed"] == 0
        results[name] = (sidecar["content_sha256"], sorted(removed["sample_id"].to_pylist()))
    assert results["one"] == results["many"]


def test_a_clip_threshold_needs_both_towers():
    with pytest.raises(ValueError, match="min_clip_score needs image and text"):
        vector_filters(QualityConfig(min_clip_score=0.2), DedupConfig(), {"fused": slice(0, D)}, D)


def test_entries_cached_before_hashes_get_semantic_dedup_only_and_are_counted(ray_local, tmp_path):
    """Shard 0 has content hashes, shards 1 and 2 were cached before them: an exact copy within shard 0 goes as
    dedup:exact; copies of shard 0's row 5 in the old shards are still found, as dedup:semantic."""
    cache = EmbeddingCache(root=Location(str(tmp_path / "cache")), fingerprint="fp")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, D)).astype(np.float32)
    hashes = np.arange(60, dtype=np.int64)
    x[15], hashes[15] = x[10], hashes[10]  # a copy within the hashed shard
    for row in (23, 47):  # row 5's bytes again, in the old shards
        x[row], hashes[row] = x[5], hashes[5]
    shards, ids = _write_shards(cache, x, hashes, unhashed=(1, 2))
    filters = vector_filters(QualityConfig(), DedupConfig(enabled=True, threshold=0.99), PARTS, D)
    scorer = ColumnScorer(MeanDistanceScorer(np.zeros((1, HALF), np.float32)), PARTS["image"])
    sidecar = score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=str(tmp_path / "m.parquet"),
                                 sidecar={}, k=None, fraction=1.0, filters=filters,
                                 options=DistributedSelection(shards_per_file=2, workers=2, cpus=0.5))
    reasons = {r["sample_id"]: r["reason"] for r in pq.read_table(sidecar["removed_uri"]).to_pylist()}
    assert reasons == {ids[15]: "dedup:exact", ids[23]: "dedup:semantic", ids[47]: "dedup:semantic"}
    assert sidecar["dedup_unhashed"] == 40
