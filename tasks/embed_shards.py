"""The distributed embedding job. The unit of work is a shard: an actor holding the model reads one shard, has
its batches decoded and preprocessed (``tasks.prepare``: by CPU tasks beside a GPU actor, on a thread of the actor
on CPUs only), runs the forward passes, publishes the
shard's cache entry itself (atomically) and returns one small summary row. The driver
only adds summaries up, so its memory and network traffic do not grow with the number of vectors, and no global
Ray state is touched (results come in any order; the cache is keyed per shard).

The shards run on ``tasks.executor``'s actor pool (``RayActors``): each actor sets up one ``ShardEmbedder`` (so loads
the model once) and embeds one shard at a time. A transient fault while reading a shard (``core.errors.is_transient``:
connection reset, timeout, 5xx, throttling) is retried under the executor's one policy; if it persists, or the shard
raises any other error, the shard fails without a cache entry and is named, after every other shard is cached, so
the next run reads it again. Content faults are quarantined in the entry by the reader and the ``Embed`` stage.

A worker claims a shard's entry (``CacheEntry.claim``) before embedding it: a run started beside another on one
cache waits while the other's worker embeds the shard, then reuses its entry; a dead worker's claim is taken over.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import ray

from core.contracts import ERRORS
from core.lease import LeaseHeld
from core.read import Quarantine, read_shard
from core.settings import SourceSpec
from estimator.threads import set_torch_threads, threads_for
from tasks.cache import CacheEntry, EmbeddingCache, EntryCounts, local_ids
from tasks.embed import Embed
from tasks.executor import Job, Resources, RetryPolicy, run
from tasks.executor.on_ray import RayActors
from tasks.filters.screen import ScreenPlan
from tasks.prepare import LocalPrepare, RemotePrepare, in_order, start_workers
from tasks.ray_config import RayConfig

SUMMARY = pa.schema(
    [
        ("shard_uri", pa.string()),
        ("source", pa.string()),
        ("rows_read", pa.int64()),  # samples the reader produced plus those it quarantined
        ("rows_embedded", pa.int64()),
        ("quarantined", pa.string()),  # JSON {reason: samples}
        ("bytes", pa.int64()),  # encoded image bytes read
        ("seconds_read", pa.float64()),  # the model waiting on the shard's reader
        ("seconds_prepare", pa.float64()),  # ... and on the tasks or thread decoding and preprocessing
        ("seconds_embed", pa.float64()),  # forward passes
        ("seconds_write", pa.float64()),
        ("attempts", pa.int64()),  # where the executor knows them (threads; on Ray, failed shards only)
        ("failed", pa.string()),  # null, or the error that failed the shard under the executor's policy
        ("reused", pa.bool_()),  # another run embedded the shard while this one waited on its lease
    ]
)


@dataclass(frozen=True)
class ShardJob:
    spec: SourceSpec
    shard_uri: str
    entry: CacheEntry  # where the shard's embeddings go
    screened: bool = False  # a pool shard of a run with filters: blocklists and thresholds before the model


@dataclass
class EmbedSummary:
    """What the driver keeps of the job: counts and one summary row per shard (``SUMMARY``)."""

    shards_embedded: int = 0
    samples_embedded: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    shards: pa.Table = field(default_factory=SUMMARY.empty_table)

    @classmethod
    def of(cls, shards: pa.Table) -> EmbedSummary:
        """Counts of the shards this run embedded (not those it reused from another run's worker)."""
        done = shards.filter(pc.and_(pc.is_null(shards["failed"]), pc.invert(pc.fill_null(shards["reused"], False))))
        quarantined: Counter = Counter()
        for counts in done["quarantined"].to_pylist():
            quarantined.update(json.loads(counts))
        return cls(done.num_rows, int(pc.sum(done["rows_embedded"]).as_py() or 0), dict(quarantined), shards)

    def raise_for_failed(self) -> None:
        """Raise ``ShardFailed`` listing the shards that failed under the executor's policy."""
        failed = self.shards.filter(pc.is_valid(self.shards["failed"]))
        if failed.num_rows:
            lost = "; ".join(f"{u} ({e}, {n} attempts)" for u, e, n in zip(
                failed["shard_uri"].to_pylist(), failed["failed"].to_pylist(), failed["attempts"].to_pylist(),
                strict=True))
            raise ShardFailed(f"{failed.num_rows} shard(s) failed; nothing was cached for them, so a rerun reads "
                              f"them again: {lost}")

    def stats(self) -> dict[str, float]:
        """Totals for the run record: samples/s over the embedding seconds, and seconds per stage."""
        t = {k: float(pc.sum(self.shards[f"seconds_{k}"]).as_py() or 0) for k in STEPS}
        busy = sum(t.values())
        return {
            "shards": self.shards.num_rows,
            "shards_reused": int(pc.sum(self.shards["reused"]).as_py() or 0),
            "rows_read": int(pc.sum(self.shards["rows_read"]).as_py() or 0),
            "rows_embedded": self.samples_embedded,
            "bytes": int(pc.sum(self.shards["bytes"]).as_py() or 0),
            "samples_per_s": round(self.samples_embedded / busy, 1) if busy else 0.0,
            **{f"seconds_{k}": round(v, 3) for k, v in t.items()},
        }


STEPS = ("read", "prepare", "embed", "write")


class ShardFailed(RuntimeError):
    """Shards that failed (persistent transient faults, or errors): nothing was cached for them, a rerun reads
    them again."""


def _work(table: pa.Table) -> pa.Table:
    """Reader output (sample contract) as ``Embed`` input: every row usable so far."""
    empty = pa.nulls(table.num_rows, pa.string())
    return table.append_column("error", empty).append_column("detail", empty).append_column("stage", empty)


def _prefetched(tables: Iterator[pa.Table], depth: int) -> Iterator[pa.Table]:
    """Iterate ``tables`` on a thread, ``depth`` batches ahead: the shard's I/O overlaps the model's compute."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def run() -> None:
        try:
            for t in tables:
                q.put(t)
            q.put(done)
        except BaseException as err:  # handed to the consumer, which re-raises it in its own thread
            q.put(err)

    threading.Thread(target=run, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass
class ShardEmbedder:
    """One shard in, its cache entry published and one ``SUMMARY`` row out: the executor's unit of work. Holds the
    ``Embed`` stage (so the model) for the life of a worker; ``setup`` checks the model is the one the cache entries
    are keyed by. Retries are the executor's: a shard that raises wrote no entry."""

    embed: Embed
    cache: EmbeddingCache
    read_batch: int = 256
    dtype: str = "float16"
    prepare_on: Literal["actor", "tasks"] = "tasks"  # a thread of the actor, or Ray CPU tasks of prepare_cpus each
    prepare_cpus: float = 0.5
    prepare_depth: int = 2  # read batches being prepared ahead of the model
    wait_every: float = 2.0  # seconds between looks at a shard another run's worker is embedding
    screen: ScreenPlan | None = None  # the filters screened jobs pass through (the cache key covers them)

    def setup(self) -> None:
        # two shards at once on the actor (``embed_shards``'s ``RayActors(calls=2)``): the next one reads and
        # prepares while this one runs the model, which only one of them uses at a time
        self._forward = threading.Lock()
        # torch sizes its pool to the machine, Ray's OMP_NUM_THREADS rounds the actor's CPUs down: the model
        # computes on exactly the CPUs the actor was given (measured: 0.55 of a bare loop on one thread of two)
        set_torch_threads(threads_for(self.embed.resources.cpus))
        self._screen = self.screen.build() if self.screen else None
        if self.prepare_on == "tasks":
            start_workers(self.embed.backbone.kind, cpus=self.prepare_cpus, n=self.prepare_depth)  # while it loads
        self.embed.setup()
        preprocessor, batch_size = self.embed.model.preprocessor, self.embed.batch_size
        self.prepare = (RemotePrepare(preprocessor, cpus=self.prepare_cpus, batch_size=batch_size)
                        if self.prepare_on == "tasks" else
                        LocalPrepare(preprocessor, batch_size=batch_size))
        if self.embed.model.fingerprint != self.cache.fingerprint:
            raise RuntimeError(
                f"this worker loaded backbone {self.embed.model.fingerprint}, but the plan keys the cache by "
                f"{self.cache.fingerprint}: its model files or placement (device/dtype) differ from what was planned"
            )

    def __call__(self, job: ShardJob) -> dict:
        """Embed ``job``'s shard and publish its entry, or wait for another run's worker to and reuse it; its
        summary row."""
        while True:
            try:
                with job.entry.claim():
                    counts = job.entry.counts()  # written by another run since the plan?
                    return self._embed(job) if counts is None else _reused(job, counts)
            except LeaseHeld:
                time.sleep(self.wait_every)

    def _embed(self, job: ShardJob) -> dict:
        quarantine = Quarantine(stage="read")
        seconds: Counter = Counter()
        parts: list[pa.Table] = []
        image_bytes = 0
        tables = read_shard(job.spec, job.shard_uri, quarantine=quarantine, batch_size=self.read_batch)
        if job.screened:
            if getattr(self, "_screen", None) is None:
                raise RuntimeError(f"{job.shard_uri}: planned with filters, but this worker has no screen")
            screen = self._screen
            # on the reading thread, before any preparing or the model sees a row: a removed sample goes no further
            tables = (t for t in (screen.apply(t, quarantine) for t in tables) if t.num_rows)
        tables = _prefetched(tables, depth=2)
        # one preparing task or thread call per read batch (read_batch samples), cut into forward passes of
        # embed.batch_size inside it
        batches = in_order(map(_work, tables), self.prepare.submit, self.prepare.fetch, depth=self.prepare_depth,
                           seconds=seconds)
        for table, prepared in batches:
            image_bytes += int(pc.sum(pc.binary_length(table["image"])).as_py() or 0)
            with self._forward:  # waiting here is the model busy with the other shard, not the model waiting
                start = time.perf_counter()
                parts.append(self.embed.finish(table, prepared))
                seconds["embed"] += time.perf_counter() - start
        start = time.perf_counter()
        counts = self._publish(job, parts, quarantine)
        seconds["write"] += time.perf_counter() - start
        return {"shard_uri": job.shard_uri, "source": job.spec.name,
                "rows_read": sum(t.num_rows for t in parts) + len(quarantine), "rows_embedded": counts.rows,
                "quarantined": json.dumps(counts.quarantined), "bytes": image_bytes,
                **{f"seconds_{k}": round(seconds[k], 4) for k in STEPS}, "reused": False}

    def _publish(self, job: ShardJob, parts: list[pa.Table], quarantine: Quarantine) -> EntryCounts:
        """Write the shard's entry: its vectors by key, and every quarantined row with ids relative to the source
        (``tasks.cache.local_ids``)."""
        errors = [quarantine.table().cast(ERRORS)]
        dim = self.embed.model.embed_dim
        good = pa.table({"key": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32(), dim))})
        if parts:
            rows = pa.concat_tables(parts)
            ok = pc.is_null(rows["error"])
            good, bad = rows.filter(ok), rows.filter(pc.invert(ok))
            quarantined = {"sample_id": bad["sample_id"], "shard_uri": bad["shard_uri"], "stage": bad["stage"],
                           "reason": bad["error"], "detail": bad["detail"]}
            errors.append(pa.table(quarantined).cast(ERRORS))
        table = pa.concat_tables(errors)
        table = table.set_column(0, "sample_id", local_ids(table["sample_id"], job.spec.name))
        return self.cache.write(job.entry, job.shard_uri, good, table, self.dtype)


def _reused(job: ShardJob, counts: EntryCounts) -> dict:
    """The summary row of a shard another run embedded: its entry's counts, no work of this one."""
    return {"shard_uri": job.shard_uri, "source": job.spec.name, "rows_read": counts.rows + counts.errors,
            "rows_embedded": counts.rows, "quarantined": json.dumps(counts.quarantined), "bytes": 0,
            **{f"seconds_{k}": 0.0 for k in STEPS}, "reused": True}


def _check_fits(embed: Embed, *, actors: int, read_cpus: float, prepare_cpus: float) -> float:
    """Refuse a job the cluster cannot schedule (Ray would wait for resources forever); the CPUs left for the
    preparing tasks otherwise."""
    have = ray.cluster_resources()
    cpus = actors * (embed.resources.cpus + read_cpus)
    gpus = actors * embed.resources.gpus
    if cpus + prepare_cpus > have.get("CPU", 0) or gpus > have.get("GPU", 0):
        raise ValueError(
            f"the embedding job needs {cpus + prepare_cpus:g} CPUs and {gpus:g} GPUs (ray.embed_actors x "
            f"(ray.actor_cpus + ray.read_cpus), + one ray.prepare_cpus with ray.prepare: tasks, and ray.embed_actors x "
            f"ray.actor_gpus) but the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs: "
            "lower ray.embed_actors, ray.actor_cpus or ray.prepare_cpus"
        )
    return have.get("CPU", 0) - cpus


@dataclass(frozen=True)
class EmbedCpus:
    """CPUs of the embedding job: per actor for the model (``actor``, also its torch threads) and its shard reader
    (``read``), per decode + preprocess task (``prepare``; 0 when the actor prepares on a thread of its own)."""

    actor: float
    read: float
    prepare: float

    @property
    def in_actor(self) -> bool:
        """Whether the actor decodes and preprocesses itself (no preparing task has CPUs: a task's are > 0)."""
        return self.prepare == 0


def embed_cpus(cluster_cpus: float, *, actors: int, gpus: float, node_cpus: float | None = None,
               actor: float | None = None, read: float | None = None, prepare: float | None = None,
               where: Literal["auto", "actor", "tasks"] = "auto") -> EmbedCpus:
    """The job's CPUs, each None taking its default for the cluster, and where decode + preprocess run (``where``;
    auto: CPU tasks with GPUs, the actor on CPUs only). With GPUs the model needs a core, and the rest decode and
    preprocess (actor 1, read 0.5, prepare 0.5). On CPUs only the forward pass is most of the work (ViT-B-32 at
    224 px: ~50x a JPEG's decode and resize), so the actors share every CPU but the reader's quarter and, with
    preparing tasks, theirs (a quarter on up to 4 CPUs, one CPU beyond): on 2 CPUs the actor gets 1.75 (1.5 beside
    tasks), so two torch threads, on 16 it gets 15.75 (14.75), so 16 (15). An actor never asks for more than its
    largest node has (``node_cpus``)."""
    in_actor = where == "actor" or (where == "auto" and gpus == 0)
    read = (0.5 if gpus > 0 else 0.25) if read is None else read
    if in_actor:
        prepare = 0.0
    elif prepare is None:
        prepare = 0.5 if gpus > 0 else 0.25 if cluster_cpus <= 4 else 1.0
    if actor is None and gpus > 0 and not in_actor:
        actor = 1.0
    elif actor is None:
        actor = max(0.25, (cluster_cpus - prepare) / actors - read)
        if node_cpus is not None:
            actor = max(0.25, min(actor, node_cpus - read))
    return EmbedCpus(actor, read, prepare)


def cluster_embed_cpus(config: RayConfig, *, gpus: float) -> EmbedCpus:
    """``embed_cpus`` of ``config`` for the current Ray cluster."""
    nodes = [n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return embed_cpus(ray.cluster_resources().get("CPU", 0.0), actors=config.embed_actors, gpus=gpus,
                      node_cpus=max(nodes) if nodes else None, actor=config.actor_cpus, read=config.read_cpus,
                      prepare=config.prepare_cpus, where=config.prepare)


def prepare_depth(free_cpus: float, *, prepare_cpus: float, actors: int) -> int:
    """Read batches each actor keeps in preparation: a task for every free CPU (never more tasks at once than
    whole free CPUs, even with fractional ``prepare_cpus``), plus one queued. Ray keeps about one worker process
    per CPU and kills idle ones beyond that, so more concurrent tasks than CPUs restart workers (seconds each:
    torch and the model library imported again): measured, 7x slower with 0.25-CPU tasks on 2 CPUs."""
    slots = int(free_cpus // max(prepare_cpus, 1.0) + 1e-9)
    return max(1, -(-slots // actors)) + 1


def embed_shards(
    jobs: list[ShardJob],
    *,
    embed: Embed,
    cache: EmbeddingCache,
    config: RayConfig,
    dtype: str = "float16",
    retries: int = 2,
    calls: int = 2,
    screen: ScreenPlan | None = None,
) -> EmbedSummary:
    """Embed every shard of ``jobs`` on the current Ray cluster; each worker writes its shards' cache entries.

    ``config`` sizes the job (``cluster_embed_cpus``: CPUs left None take the cluster's defaults) and says where
    decode + preprocess run. Each of ``config.embed_actors`` actors reserves its model's CPUs (``embed``'s GPUs
    beside them) plus ``read_cpus`` for reading its shard, and prepares batches on a thread of its own or hands them to
    tasks of ``prepare_cpus`` each on the CPUs left. Each actor holds ``calls`` shards at once, so reading ahead
    crosses shard boundaries: the next shard's reading and preparing overlap this one's forward passes (measured
    with 32-sample shards: the model waited 66 % of its time with one). Raises ``ShardFailed`` (after every other
    shard is cached) naming the shards that failed: transient faults that outlasted ``retries``, or any other error.
    """
    if not jobs:
        return EmbedSummary()
    cpus = cluster_embed_cpus(config, gpus=embed.resources.gpus)
    embed = replace(embed, resources=Resources(cpus=cpus.actor, gpus=embed.resources.gpus))
    actors = config.embed_actors
    free = _check_fits(embed, actors=actors, read_cpus=cpus.read, prepare_cpus=cpus.prepare)
    depth = 2 if cpus.in_actor else prepare_depth(free, prepare_cpus=cpus.prepare, actors=actors * calls)
    embedder = ShardEmbedder(embed=embed, cache=cache, read_batch=config.read_batch_size,
                             dtype=dtype, prepare_on="actor" if cpus.in_actor else "tasks",
                             prepare_cpus=cpus.prepare, prepare_depth=depth, screen=screen)
    pool = RayActors(actors=actors, cpus=cpus.actor + cpus.read, gpus=embed.resources.gpus,
                     policy=RetryPolicy(retries=retries), calls=calls)
    done = run(Job(step="embed", units=jobs, work=embedder, name=lambda job: job.shard_uri,
                   samples=lambda row: row["rows_embedded"]), pool)
    failed = [{"shard_uri": f.unit.shard_uri, "source": f.unit.spec.name, "attempts": f.attempts, "failed": f.error}
              for f in done.failures]
    summary = EmbedSummary.of(pa.Table.from_pylist(done.rows + failed, schema=SUMMARY))
    summary.raise_for_failed()
    return summary
