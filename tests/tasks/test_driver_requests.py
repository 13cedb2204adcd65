"""After the embedding step the driver reads nothing per shard: the workers' summary rows and the entries' counts
tell it every shard's rows and quarantined rows. Counted over the real S3 protocol with the test server's log."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from core.contracts import ERRORS
from core.location import Location
from core.storage import filesystem, publish_bytes
from tasks.cache import CacheEntry, EmbeddingCache, EntryCounts
from tasks.curation import Plan, _look_up, counted, gather_errors, usable_rows
from tasks.embed_shards import SUMMARY, EmbedSummary
from tasks.sample_counts import known_pool_size
from tasks.score import CachedShard, load_features

ROWS = 5


def embeddings(n: int, dim: int = 4) -> pa.Table:
    x = np.ones((n, dim), np.float32)
    return pa.table({"key": [f"{i:04d}" for i in range(n)],
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)})


def quarantined(shard_uri: str) -> pa.Table:
    return pa.table({"sample_id": ["bad"], "shard_uri": [shard_uri], "stage": ["read"], "reason": ["undecodable"],
                     "detail": ["x"]}).cast(ERRORS)


def embedded_pool(s3, name: str, shards: int) -> tuple[Plan, EmbedSummary]:
    """A plan of ``shards`` pool shards and one robot shard, embedded: every entry written and reported as a
    worker does (the first pool shard quarantined one sample)."""
    bucket = s3.make_bucket(name)
    cache = EmbeddingCache(root=Location(f"{bucket}/cache", s3.storage), fingerprint="fp")
    pool = [CachedShard("web", f"{bucket}/pool/{i}.tar", f"{i}.tar", CacheEntry(cache.root.join("fp", f"p{i}")))
            for i in range(shards)]
    robot = [CachedShard("robot", f"{bucket}/robot/0.parquet", "0.parquet", CacheEntry(cache.root.join("fp", "r0")))]
    rows = []
    for i, shard in enumerate(pool + robot):
        errors = quarantined(shard.shard_uri) if i == 0 else ERRORS.empty_table()
        cache.write(shard.entry, shard.shard_uri, embeddings(ROWS), errors, "float32")
        rows.append({"shard_uri": shard.shard_uri, "source": shard.source, "rows_read": ROWS + errors.num_rows,
                     "rows_embedded": ROWS, "quarantined": json.dumps({"undecodable": errors.num_rows} if i == 0
                                                                      else {})})
    plan = Plan(backbone=None, cache=cache, pool=pool, robot=robot, todo=[], listing_errors=ERRORS.empty_table())
    return plan, EmbedSummary.of(pa.Table.from_pylist(rows, schema=SUMMARY))


def after_embedding(s3, plan: Plan, summary: EmbedSummary) -> tuple[int, int]:
    """Storage requests of the driver's counting (error rate, K, the run's errors) and of its fit sample."""
    mark = s3.log.mark()
    plan = counted(plan, summary)
    usable = usable_rows(plan)
    pool_size = known_pool_size(plan.pool, [], s3.storage)  # as a later run, every shard cached, sees it
    errors = gather_errors(plan)
    counting = len(s3.log.since(mark))
    assert set(usable.values()) == {ROWS} and len(usable) == len(plan.pool) + 1
    assert pool_size == ROWS * len(plan.pool)
    assert errors["sample_id"].to_pylist() == ["web/bad"]
    mark = s3.log.mark()
    load_features(plan.pool, max_rows=4, seed=0)
    return counting, len(s3.log.since(mark))


def test_the_driver_reads_nothing_per_shard_after_embedding(s3):
    small = after_embedding(s3, *embedded_pool(s3, "driver-small", 4))
    large = after_embedding(s3, *embedded_pool(s3, "driver-large", 12))
    assert small[0] == large[0], (small, large)  # a constant: reading the one entry that quarantined a sample
    assert max(small[1], large[1]) <= 4 * 3, (small, large)  # the fit sample's row groups, never a footer per shard


def test_counts_come_from_one_object_or_the_footers_of_an_older_entry(s3):
    plan, _ = embedded_pool(s3, "driver-counts", 1)
    entry = plan.pool[0].entry
    mark = s3.log.mark()
    assert entry.counts() == EntryCounts(rows=ROWS, quarantined={"undecodable": 1})
    assert {path.rsplit("/", 1)[-1] for _, path in s3.log.since(mark)} == {"p0.counts.json"}  # that object alone
    fs, path = filesystem(entry.uri + ".counts.json", s3.storage)
    fs.rm(path)  # as an entry written before counts were kept
    assert entry.counts() == EntryCounts(rows=ROWS, quarantined={"undecodable": 1})
    assert CacheEntry(plan.cache.root.join("fp", "never")).counts() is None


def test_the_preflight_makes_a_fixed_number_of_requests_per_shard(s3):
    """Before embedding, the driver's plan asks storage about every shard: its identity (size, ETag) for the cache
    key, then the entry's counts. Measured here for the capacity model (bench/capacity.py ``--preflight-requests``):
    3 per cached shard (HEAD shard, HEAD + GET counts), 5 per shard not yet embedded (the missing counts and
    vectors each cost a HEAD and a bucket listing); one after the other, so S x 3-5 x latency."""
    from core.settings import SourceSpec

    bucket = s3.make_bucket("preflight-requests")
    uris = [f"{bucket}/pool/{i:03d}.tar" for i in range(12)]
    for uri in uris:
        publish_bytes(uri, b"x" * 10, s3.storage)
    spec = SourceSpec(name="web", format="webdataset", uri=f"{bucket}/pool/")
    cache = EmbeddingCache(root=Location(f"{bucket}/cache", s3.storage), fingerprint="fp")

    def per_shard(uris: list[str]) -> float:
        mark = s3.log.mark()
        for uri in uris:
            _look_up(cache, spec, None, uri)  # the preflight's lookup of one shard
        return len(s3.log.since(mark)) / len(uris)

    uncached = per_shard(uris)
    for uri in uris:
        cache.write(cache.entry(spec, uri), uri, embeddings(ROWS), ERRORS.empty_table(), "float32")
    cached = per_shard(uris)
    print(f"preflight requests per shard: uncached {uncached:g}, cached {cached:g}")
    assert cached == 3 and uncached <= 5, (cached, uncached)
