"""The distributed embedding job: Ray Data reads shards, an actor pool embeds them, the driver writes the
embedding cache shard by shard as each shard completes.

Every shard's stream ends with one marker row carrying the number of rows the shard produced, so the driver
publishes a cache entry only when all of its rows arrived (order is preserved, so a shard's rows are contiguous).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from core.contracts import ERRORS
from core.read import Quarantine, read_shard
from core.settings import SourceSpec, StorageConfig
from tasks.cache import EmbeddingCache
from tasks.embed import Embed
from tasks.ray_stage import map_stage

END = "__end_of_shard__"
WORK = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source", pa.string()),
        ("shard_uri", pa.string()),
        ("key", pa.string()),
        ("image", pa.binary()),
        ("text", pa.string()),
        ("error", pa.string()),
        ("detail", pa.string()),
        ("stage", pa.string()),  # the stage that set the row aside (null while usable)
    ]
)


@dataclass(frozen=True)
class ShardJob:
    spec: SourceSpec
    shard_uri: str
    entry: str  # cache entry the shard's embeddings go to


@dataclass
class EmbedSummary:
    shards_embedded: int = 0
    samples_embedded: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)


def _work(table: pa.Table) -> pa.Table:
    """Reader output (sample contract) as work rows: usable, so no error."""
    n = table.num_rows
    cols = {name: table[name] for name in ("sample_id", "source", "shard_uri", "key", "image", "text")}
    empty = pa.nulls(n, pa.string())
    return pa.table({**cols, "error": empty, "detail": empty, "stage": empty}, schema=WORK)


def _quarantined(q: Quarantine, spec: SourceSpec, shard_uri: str, count: int) -> pa.Table:
    """The reader's quarantined rows, then the end-of-shard marker."""
    rows = [
        {**r, "source": spec.name, "key": "", "image": b"", "text": "", "error": r["reason"], "detail": r["detail"]}
        for r in q.rows
    ]
    rows.append(
        {
            "source": spec.name,
            "shard_uri": shard_uri,
            "key": "",
            "image": b"",
            "text": "",
            "error": END,
            "detail": str(count + len(q.rows) + 1),
        }
    )
    return pa.Table.from_pylist(rows, schema=WORK)


def read_shards(batch: pa.Table, *, storage: StorageConfig | None, read_batch: int) -> Iterator[pa.Table]:
    """Ray Data UDF: one batch of shard jobs in, the work rows of each shard out (streamed)."""
    for spec_json, shard_uri in zip(batch["spec"].to_pylist(), batch["shard_uri"].to_pylist(), strict=True):
        spec = SourceSpec.model_validate_json(spec_json)
        q, count = Quarantine(stage="read"), 0
        for table in read_shard(spec, shard_uri, quarantine=q, storage=storage, batch_size=read_batch):
            count += table.num_rows
            yield _work(table)
        yield _quarantined(q, spec, shard_uri, count)


class _ShardAssembler:
    """Collects a shard's embedded rows; writes its cache entry when the end marker arrives."""

    def __init__(self, jobs: list[ShardJob], cache: EmbeddingCache, dtype: str, summary: EmbedSummary) -> None:
        self.entries = {j.shard_uri: j.entry for j in jobs}
        self.cache, self.dtype, self.summary = cache, dtype, summary
        self.parts: dict[str, list[pa.Table]] = {}

    def add(self, batch: pa.Table) -> None:
        for shard_uri in pc.unique(batch["shard_uri"]).to_pylist():
            part = batch.filter(pc.equal(batch["shard_uri"], shard_uri))
            self.parts.setdefault(shard_uri, []).append(part)
            if pc.any(pc.equal(part["error"], END)).as_py():
                self._finish(shard_uri)

    def _finish(self, shard_uri: str) -> None:
        rows = pa.concat_tables(self.parts.pop(shard_uri))
        is_end = pc.fill_null(pc.equal(rows["error"], END), False)
        expected = int(rows.filter(is_end)["detail"][0].as_py())
        if rows.num_rows != expected:
            raise RuntimeError(f"shard {shard_uri}: {rows.num_rows} rows arrived, {expected} expected")
        rows = rows.filter(pc.invert(is_end))
        ok = pc.is_null(rows["error"])
        good, bad = rows.filter(ok), rows.filter(pc.invert(ok))
        errors = pa.table(
            {
                "sample_id": bad["sample_id"],
                "shard_uri": bad["shard_uri"],
                "stage": bad["stage"],
                "reason": bad["error"],
                "detail": bad["detail"],
            }
        ).cast(ERRORS)
        self.cache.write(self.entries[shard_uri], shard_uri, good, errors, self.dtype)
        self.summary.shards_embedded += 1
        self.summary.samples_embedded += good.num_rows
        for reason in bad["error"].to_pylist():
            self.summary.quarantined[reason] = self.summary.quarantined.get(reason, 0) + 1


def _check_fits(embed: Embed, *, actors: int, read_cpus: float) -> None:
    """Refuse a job whose actors leave no room for a read task: Ray would wait for resources forever."""
    have = ray.cluster_resources()
    cpus = actors * embed.resources.cpus + read_cpus
    gpus = actors * embed.resources.gpus
    if cpus > have.get("CPU", 0) or gpus > have.get("GPU", 0):
        raise ValueError(
            f"the embedding job needs {cpus:g} CPUs and {gpus:g} GPUs (ray.embed_actors x ray.actor_cpus/actor_gpus "
            f"+ ray.read_cpus) but the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs: "
            "lower ray.embed_actors or ray.actor_cpus"
        )


def embed_shards(
    jobs: list[ShardJob],
    *,
    embed: Embed,
    cache: EmbeddingCache,
    storage: StorageConfig | None = None,
    actors: int = 1,
    read_cpus: float = 0.5,
    read_batch: int = 256,
    dtype: str = "float16",
) -> EmbedSummary:
    """Embed every shard of ``jobs`` on the current Ray cluster and write each to ``cache``."""
    summary = EmbedSummary()
    if not jobs:
        return summary
    _check_fits(embed, actors=actors, read_cpus=read_cpus)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    items = [{"spec": j.spec.model_dump_json(), "shard_uri": j.shard_uri} for j in jobs]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        read_shards,
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=read_cpus,
        fn_kwargs={"storage": storage, "read_batch": read_batch},
    )
    ds = map_stage(ds, embed, actors=actors)
    assembler = _ShardAssembler(jobs, cache, dtype, summary)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        assembler.add(batch)
    if assembler.parts:
        raise RuntimeError(f"shards without an end marker: {sorted(assembler.parts)}")
    return summary
