"""Two runs started together on one cache (on the S3 test server) embed each shard once: a worker claims a shard's
entry before embedding it, the other run's worker waits and reuses the entry; a dead worker's claim is taken over."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pyarrow as pa
import pytest

from core.location import Location
from core.read import list_shards
from core.storage import publish_bytes
from estimator.backbones.fingerprint import describe
from estimator.backbones.tiny import save_tiny_backbone
from tasks.cache import EmbeddingCache
from tasks.embed import Embed
from tasks.embed_shards import SUMMARY, EmbedSummary, ShardEmbedder, ShardJob
from tasks.executor import Job, Report, Threads, run


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("model")), seed=0)


@pytest.mark.usefixtures("ray_local")
def test_two_runs_on_one_cache_embed_each_shard_once(s3, s3_corpus, backbone):
    cache = EmbeddingCache(root=Location(f"{s3.make_bucket('claims')}/cache", s3.storage),
                           fingerprint=describe(backbone).fingerprint)
    spec = s3_corpus.pool[2]  # parquet, 10-row shards
    jobs = [ShardJob(spec=spec, shard_uri=u, entry=cache.entry(spec, u)) for u in list_shards(spec)]
    dead = {"token": "x", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}  # a worker killed long ago
    publish_bytes(jobs[0].entry.uri + ".lease.json", json.dumps(dead).encode(), s3.storage)
    mark = s3.log.mark()
    reports: dict[str, Report] = {}

    def one_run(name: str) -> None:  # each run plans every shard: neither had an entry when it looked
        worker = ShardEmbedder(embed=Embed(backbone=backbone), cache=cache, dtype="float32",
                               wait_every=0.2)
        reports[name] = run(Job(step="embed", units=jobs, work=worker, name=lambda j: j.shard_uri),
                            Threads(workers=2))

    runs = [threading.Thread(target=one_run, args=(name,)) for name in ("a", "b")]
    for t in runs:
        t.start()
    for t in runs:
        t.join()

    written = Counter(path for method, path in s3.log.since(mark) if method == "PUT" and path.endswith(".parquet")
                      and not path.endswith(".errors.parquet") and "/.tmp-" not in path)  # published, not staged
    assert len(written) == len(jobs) and set(written.values()) == {1}, written  # each entry written once
    rows = [r for report in reports.values() for r in report.rows]
    assert not any(report.failures for report in reports.values())
    assert Counter(r["unit"] for r in rows if not r["reused"]) == Counter(j.shard_uri for j in jobs)
    embedded = {r["unit"]: r["rows_embedded"] for r in rows if not r["reused"]}
    reused = {r["unit"]: r["rows_embedded"] for r in rows if r["reused"]}
    assert reused == embedded and sum(embedded.values()) == s3_corpus.counts[spec.name]  # the waiting run's counts
    summaries = [EmbedSummary.of(pa.Table.from_pylist(r.rows, schema=SUMMARY)) for r in reports.values()]
    assert sum(s.shards_embedded for s in summaries) == len(jobs)  # a run counts only the work it did
    assert sum(s.stats()["shards_reused"] for s in summaries) == len(jobs)
