"""The distributed embedding job: a shard is the unit of work, the worker publishes its cache entry and returns a
summary row; transient faults fail a shard without caching it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray.data

import core.read.webdataset as webdataset
from core.contracts import LOCATION_NAMES
from core.location import Location
from core.read import Quarantine, list_shards, read_shard
from estimator.backbones.tiny import save_tiny_backbone
from tasks.cache import EmbeddingCache, vectors
from tasks.embed import Embed, content_hashes, prepare_rows
from tasks.embed_shards import SUMMARY, EmbedSummary, ShardEmbedder, ShardFailed, ShardJob, _work, embed_shards
from tasks.executor import Job, Report, Resources, RetryPolicy, Threads, run
from tasks.executor.on_ray import RayActors
from tasks.ray_config import RayConfig


def test_shards_run_on_an_actor_pool_sized_from_the_config(monkeypatch, tmp_path, tiny_backbone):
    """The executor gets one actor per ``embed_actors``, each reserving the actor's and the reading CPUs and the
    stage's GPUs, and the job's retry policy; a GPU actor hands decoding to CPU tasks; the summary comes from its
    rows."""
    import tasks.embed_shards as embed_shards_module

    seen = {}

    def recording_run(job, executor):
        seen.update(job=job, executor=executor)
        return Report(job.step, rows=[{"shard_uri": "s", "source": "p", "rows_read": 3, "rows_embedded": 3,
                                       "quarantined": "{}", "attempts": None, "unit": "s"}])

    monkeypatch.setattr(embed_shards_module.ray, "cluster_resources", lambda: {"CPU": 16, "GPU": 3})
    monkeypatch.setattr(embed_shards_module.ray, "nodes", lambda: [])
    monkeypatch.setattr(embed_shards_module, "run", recording_run)
    embed = Embed(backbone=tiny_backbone, resources=Resources(gpus=1))
    summary = embed_shards([object()], embed=embed, cache=EmbeddingCache(root=Location(str(tmp_path)), fingerprint="f"),
                           config=RayConfig(embed_actors=3, actor_cpus=0.5, read_cpus=0.25), retries=4)
    pool, work = seen["executor"], seen["job"].work
    assert isinstance(pool, RayActors) and (pool.actors, pool.cpus, pool.gpus) == (3, 0.75, 1)
    assert pool.policy.retries == 4 and isinstance(work, ShardEmbedder)
    assert work.embed.resources == Resources(cpus=0.5, gpus=1) and work.prepare_on == "tasks"
    assert summary.shards_embedded == 1 and summary.samples_embedded == 3


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("model")), seed=0)


def _cache(tmp_path, backbone) -> EmbeddingCache:
    from estimator.backbones.fingerprint import describe

    return EmbeddingCache(root=Location(str(tmp_path / "cache")), fingerprint=describe(backbone).fingerprint)


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("prepare", ["actor", "tasks"])
def test_workers_publish_their_shards_and_return_summary_rows(local_corpus, tiny_backbone, tmp_path, prepare):
    """On either path (decoding on the actor's threads, or on CPU tasks) the vectors are bit for bit those one
    process makes of the same samples."""
    spec = local_corpus.pool[2]  # parquet, 10-row shards: batches of 5 end exactly at the shard's end
    cache = _cache(tmp_path, tiny_backbone)
    jobs = [ShardJob(spec=spec, shard_uri=u, entry=cache.entry(spec, u)) for u in list_shards(spec)]
    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order, context.enable_progress_bars
    summary = embed_shards(jobs, embed=Embed(backbone=tiny_backbone, batch_size=5), cache=cache,
                           config=RayConfig(actor_cpus=1, read_cpus=0.5, prepare=prepare))
    assert (context.execution_options.preserve_order, context.enable_progress_bars) == before  # no global state
    assert summary.shards_embedded == len(jobs) and summary.samples_embedded == local_corpus.counts[spec.name]
    assert sorted(summary.shards["shard_uri"].to_pylist()) == sorted(j.shard_uri for j in jobs)
    assert summary.shards.column_names[:4] == ["shard_uri", "source", "rows_read", "rows_embedded"]
    assert all(s > 0 for s in summary.shards["seconds_embed"].to_pylist())
    assert "seconds_prepare" in summary.stats()
    stats = summary.stats()
    assert stats["rows_embedded"] == summary.samples_embedded and stats["samples_per_s"] > 0
    entries = [j.entry.read() for j in jobs]
    assert all(vectors(e).shape[1] == 64 for e in entries)
    # the source's name is not cached; where each sample is (a Parquet shard: its row group) is
    assert all(e.column_names == ["key", "embedding", *LOCATION_NAMES, "content_hash"] for e in entries)
    assert all(e["content_hash"].null_count == 0 for e in entries)  # each sample's image bytes, hashed
    assert all(e["row_group"].null_count == 0 and e["byte_offset"].null_count == e.num_rows for e in entries)
    # the actor's threads or CPU tasks decoded and preprocessed, the actor ran the forward passes: the vectors are
    # those one process makes of the same samples (the cache keeps float16)
    local = Embed(backbone=tiny_backbone, batch_size=5)
    local.setup()
    samples = pa.concat_tables(read_shard(spec, jobs[0].shard_uri, quarantine=Quarantine()))
    batch = _work(samples)
    expected = vectors(local.finish(batch, prepare_rows(local.model.preprocessor, batch, 5))).astype(np.float16)
    np.testing.assert_array_equal(vectors(jobs[0].entry.read()).astype(np.float16), expected)
    assert jobs[0].entry.read_hashes().tolist() == content_hashes(samples["image"]).to_pylist()


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize(("prepare", "cpus"), [("actor", "3"), ("tasks", "3.5")])
def test_job_that_cannot_fit_is_refused(local_corpus, tiny_backbone, tmp_path, prepare, cpus):
    spec = local_corpus.pool[2]
    cache = _cache(tmp_path, tiny_backbone)
    shard = list_shards(spec)[0]
    config = RayConfig(embed_actors=2, actor_cpus=1, read_cpus=0.5, prepare=prepare,
                       prepare_cpus=0.5 if prepare == "tasks" else None)
    with pytest.raises(ValueError, match=f"needs {cpus} CPUs"):
        embed_shards([ShardJob(spec=spec, shard_uri=shard, entry=cache.entry(spec, shard))],
                     embed=Embed(backbone=tiny_backbone), cache=cache, config=config)


def test_shards_lost_to_transient_faults_fail_the_job_after_the_others():
    rows = [{"shard_uri": "s3://b/0.tar", "source": "p", "rows_read": 10, "rows_embedded": 10, "quarantined": "{}",
             "attempts": 1, "failed": None},
            {"shard_uri": "s3://b/1.tar", "source": "p", "attempts": 3, "failed": "ConnectionResetError: reset"}]
    summary = EmbedSummary.of(pa.Table.from_pylist(rows, schema=SUMMARY))
    assert summary.shards_embedded == 1 and summary.samples_embedded == 10
    with pytest.raises(ShardFailed, match=r"1 shard\(s\).*rerun reads them again: s3://b/1.tar \(Connection"):
        summary.raise_for_failed()


class _CutFile(io.RawIOBase):
    """A file whose connection resets after ``limit`` bytes, ``failures`` times (then it reads through)."""

    def __init__(self, data: bytes, limit: int, state: dict) -> None:
        self.data, self.limit, self.state, self.pos = data, limit, state, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.state["failures"] and self.pos >= self.limit:
            self.state["failures"] -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        chunk = self.data[self.pos : min(self.pos + len(b), self.limit if self.state["failures"] else len(self.data))]
        b[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def _cut_after_two_samples(monkeypatch, shard_uri: str, failures: int) -> None:
    """Every open of ``shard_uri`` resets the connection once the first two samples are through."""
    data = Path(shard_uri).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        keys = []
        for m in tar.getmembers():
            key = m.name.split(".")[0]
            if key not in keys:
                keys.append(key)
            if len(keys) == 3:
                limit = m.offset  # the third sample's first header
                break
    state = {"failures": failures}
    real = webdataset.filesystem

    class _FS:
        def __init__(self, fs) -> None:
            self.fs = fs

        def open(self, path, mode="rb"):
            return io.BufferedReader(_CutFile(data, limit, state), buffer_size=512)

    monkeypatch.setattr(webdataset, "filesystem", lambda uri, storage=None: (_FS(real(uri)[0]), real(uri)[1]))


@pytest.mark.parametrize(("failures", "cached"), [(1, True), (5, False)])
def test_connection_reset_mid_shard_is_retried_and_never_cached_partial(
    local_corpus, tiny_backbone, tmp_path, monkeypatch, failures, cached
):
    spec = local_corpus.pool[0]  # webdataset, 10 samples per shard
    shard = list_shards(spec)[0]
    cache = _cache(tmp_path, tiny_backbone)
    job = ShardJob(spec=spec, shard_uri=shard, entry=cache.entry(spec, shard))
    _cut_after_two_samples(monkeypatch, shard, failures)
    worker = ShardEmbedder(embed=Embed(backbone=tiny_backbone), cache=cache)
    # the executor's policy on threads: what the actor pool applies through Ray's retries
    report = run(Job(step="embed", units=[job], work=worker, name=lambda j: j.shard_uri),
                 Threads(workers=1, policy=RetryPolicy(retries=2, backoff_s=0.01)))
    if cached:  # reset once, read again in full: all 10 samples, nothing quarantined
        (row,) = report.rows
        assert row["attempts"] == 2 and row["rows_embedded"] == 10
        assert job.entry.read().num_rows == 10 and json.loads(row["quarantined"]) == {}
    else:  # reset every time: the shard fails, named, and no entry (not a 2-row one) is written
        (failure,) = report.failures
        assert failure.attempts == 3 and failure.error.startswith("ConnectionResetError") and failure.name == shard
        assert not job.entry.exists()


def test_a_worker_whose_model_is_not_the_planned_one_fails_loudly(tiny_backbone, tmp_path):
    cache = EmbeddingCache(root=Location(str(tmp_path)), fingerprint="planned-for-another-model")
    worker = ShardEmbedder(embed=Embed(backbone=tiny_backbone), cache=cache)
    with pytest.raises(RuntimeError, match="planned-for-another-model"):
        worker.setup()


def test_a_gpu_stage_loads_the_gpu_placement(tiny_backbone, monkeypatch):
    """The Embed stage places its model by its declared resources, not by what the machine has."""
    seen = []
    monkeypatch.setattr("tasks.embed.load_backbone", lambda spec, storage: seen.append(spec) or pa.table({}))
    Embed(backbone=tiny_backbone, resources=Resources(gpus=1)).setup()
    Embed(backbone=tiny_backbone, resources=Resources(cpus=1)).setup()
    assert [(s.device, s.dtype) for s in seen] == [("cuda", "bfloat16"), ("cpu", "float32")]
