"""Export: a manifest's selected samples as new WebDataset shards in img2dataset's layout, in rank order.

    {output_uri}/_export.json     what the output is an export of (manifest, its content hash, samples_per_shard)
    {output_uri}/00000.tar        per sample KEY.jpg|png|webp (the original image bytes, extension from their
                                  format), KEY.txt (the text) and KEY.json (key, caption, source, sample_id, score,
                                  rank and the sample's original shard, key and location)
    {output_uri}/00000.parquet    the shard's rows as img2dataset writes them beside a tar: key, sample_id, source,
                                  rank, score, status ("success", or why the sample could not be read back)
    {output_uri}/index.json       shard -> samples written, first and last rank; totals
    {output_uri}/_SUCCESS         written last

Output shard ``s`` holds the selected samples at places ``[s × samples_per_shard, (s+1) × samples_per_shard)`` in
rank order, and the key of the i-th is ``{s:05d}{i:04d}`` (more digits for shards over 10,000). A shard's tar is
published atomically (``core.storage.publish``) after its Parquet file, so a tar that exists is complete: a rerun
skips those and writes only the others (a rerun of a finished export rewrites nothing but the index). Samples come
back with range reads where the manifest records their locations (``core.manifest.read_samples``), ``fetch_batch``
ranks at a time so memory holds one batch; where it does not, each source shard an output shard needs is read whole,
once per output shard. A sample that cannot be read back is not written and its row says why; a transient storage
fault that outlasts botocore's retries and then the executor's fails its shard, which a rerun writes.

Each output shard is one unit of work (``export_shard``) run by ``tasks.executor``: threads in this process, or one Ray
task per shard on the current Ray cluster (``executor="ray"``); either way a transient fault is retried under the
executor's one policy, and the driver keeps one small summary per shard. ``export_selected`` raises ``JobFailed``
naming the shards that failed, after the others are written.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from core.location import Location
from core.manifest import pool_specs, read_manifest, read_samples, read_sidecar
from core.read import Quarantine, located
from core.settings import SourceSpec
from tasks.executor import Executor, Job, Threads, run
from tasks.export_params import ExportParams

SHARD_ROWS = pa.schema(
    [
        ("key", pa.string()),
        ("sample_id", pa.string()),
        ("source", pa.string()),
        ("rank", pa.int64()),
        ("score", pa.float32()),
        ("status", pa.string()),  # "success", or the reason the sample is not in the tar
    ]
)


@dataclass(frozen=True)
class OutputShard:
    """One output shard's work: its manifest rows in rank order and everything needed to write them."""

    index: int
    rows: pa.Table
    output: Location
    specs: dict[str, SourceSpec]  # bound to the manifest's storage settings
    key_digits: int
    fetch_batch: int

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


@dataclass
class ExportReport:
    output_uri: str
    shards: int
    written: int  # shards written by this run (the others were already there)
    samples: int
    failed: dict[str, int] = field(default_factory=dict)  # samples not written, by reason
    seconds: float = 0.0


def image_ext(data: bytes) -> str:
    """The file extension of encoded image bytes, from their format (``jpg``, ``png``, ``webp``...): the common
    formats by their signature, any other as Pillow names it."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    with Image.open(io.BytesIO(data)) as img:
        return (img.format or "bin").lower()


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: equal samples give equal tars
    tar.addfile(info, io.BytesIO(data))


def _fetch(job: OutputShard, rows: pa.Table, quarantine: Quarantine) -> dict[str, dict]:
    """The samples of ``rows`` that read back, by sample id (range reads where located, else whole shards)."""
    found: dict[str, dict] = {}
    for shard_uri in pc.unique(rows["shard_uri"]).to_pylist():
        part = rows.filter(pc.equal(rows["shard_uri"], shard_uri))
        spec = job.specs[part["source"][0].as_py()]
        for table in read_samples(spec, shard_uri, part, quarantine=quarantine):
            for sample in table.select(["sample_id", "image", "text", "meta"]).to_pylist():
                found[sample["sample_id"]] = sample
    return found


def _why_missing(quarantine: Quarantine, sample_id: str, shard_uri: str) -> str:
    for row in quarantine.rows:
        if row["sample_id"] == sample_id or (row["sample_id"] is None and row["shard_uri"] == shard_uri):
            return row["reason"]
    return "not_found"


def _sidecar_json(key: str, row: dict, sample: dict) -> bytes:
    original = {k: row[k] for k in ("shard_uri", "key", "byte_offset", "byte_length", "row_group")}
    info = {"key": key, "caption": sample["text"], "status": "success"}
    info |= {k: row[k] for k in ("source", "sample_id", "score", "rank")}
    info["original"] = {**original, "meta": sample["meta"]}
    return json.dumps(info, ensure_ascii=False).encode()


def export_shard(job: OutputShard) -> dict:
    """Write one output shard (its Parquet rows, then its tar, atomically) unless its tar exists; a summary row."""
    start = time.perf_counter()
    tar_at, rows_at = (job.output.join(f"{job.name}.{ext}") for ext in ("tar", "parquet"))
    if tar_at.exists() and rows_at.exists():
        status = rows_at.read_parquet(["status"])["status"].to_pylist()
        return _summary(job, status, written=False, seconds=time.perf_counter() - start)
    quarantine = Quarantine(stage="export")
    rows = job.rows.to_pylist()
    status: list[str] = []
    # where any row lacks a location, fetch the whole shard's rows at once: each source shard is read whole once
    step = job.fetch_batch if _located_everywhere(job) else max(1, len(rows))
    with tar_at.publish() as f:
        # ustar: keys are short ASCII names, and no pax header needs writing (or, per member, considering)
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for first in range(0, len(rows), step):
                found = _fetch(job, job.rows.slice(first, step), quarantine)
                for i, row in enumerate(rows[first : first + step], start=first):
                    key = f"{job.name}{i:0{job.key_digits}d}"
                    sample = found.get(row["sample_id"])
                    if sample is None:
                        status.append(_why_missing(quarantine, row["sample_id"], row["shard_uri"]))
                        continue
                    _member(tar, f"{key}.{image_ext(sample['image'])}", sample["image"])
                    _member(tar, f"{key}.txt", sample["text"].encode())
                    _member(tar, f"{key}.json", _sidecar_json(key, row, sample))
                    status.append("success")
        table = pa.table(
            {
                "key": [f"{job.name}{i:0{job.key_digits}d}" for i in range(len(rows))],
                **{name: job.rows[name] for name in ("sample_id", "source", "rank", "score")},
                "status": status,
            },
            schema=SHARD_ROWS,
        )
        rows_at.write_parquet(table)  # before the tar is moved into place: the tar marks it done
    return _summary(job, status, written=True, seconds=time.perf_counter() - start)


def _located_everywhere(job: OutputShard) -> bool:
    """True when every row of the job has the location its source's format is read by."""
    for shard_uri in pc.unique(job.rows["shard_uri"]).to_pylist():
        part = job.rows.filter(pc.equal(job.rows["shard_uri"], shard_uri))
        if not located(job.specs[part["source"][0].as_py()], part):
            return False
    return True


def _summary(job: OutputShard, status: list[str], *, written: bool, seconds: float) -> dict:
    ranks = job.rows["rank"]
    return {
        "shard": f"{job.name}.tar",
        "samples": status.count("success"),
        "failed": dict(Counter(s for s in status if s != "success")),
        "first_rank": ranks[0].as_py(),
        "last_rank": ranks[-1].as_py(),
        "written": written,
        "seconds": round(seconds, 3),
    }


def _stamp(params: ExportParams, sidecar: dict) -> None:
    """Record what the output is an export of, or refuse to mix with an export of something else there."""
    stamp = params.output.join("_export.json")
    want = {
        "manifest_uri": params.manifest_uri,
        "content_sha256": sidecar.get("content_sha256"),
        "samples_per_shard": params.samples_per_shard,
    }
    if stamp.exists():
        have = json.loads(stamp.read_bytes())
        if have.get("samples_per_shard") != want["samples_per_shard"]:
            raise ValueError(
                f"samples_per_shard: {params.output_uri} holds an export cut at {have.get('samples_per_shard')} "
                "samples per shard; use that value, another output_uri, or delete the output"
            )
        if have.get("content_sha256") != want["content_sha256"]:
            raise ValueError(
                f"manifest_uri: {params.output_uri} holds an export of another manifest ({have.get('manifest_uri')}, "
                f"content {have.get('content_sha256')}); use another output_uri or delete the output"
            )
        return
    stamp.publish_bytes(json.dumps(want, indent=1).encode())


def _executor(params: ExportParams) -> Executor:
    """Threads in this process, or one Ray task per output shard on the current Ray cluster."""
    if params.executor == "ray":
        from tasks.executor.on_ray import RayTasks  # the curation stack: only this executor needs Ray

        return RayTasks(cpus=params.ray_cpus)
    return Threads(workers=params.workers)


def export_selected(params: ExportParams) -> ExportReport:
    """Export the manifest's selected samples to ``params.output_uri`` (see the module's docstring); raises
    ``JobFailed`` (a ``RuntimeError``) naming the shards that failed (after the others are written; a rerun writes
    them) and
    ``ValueError`` when the output holds an export of another manifest or another cut."""
    start = time.perf_counter()
    sidecar = read_sidecar(params.manifest)
    _stamp(params, sidecar)
    chosen = read_manifest(params.manifest, selected_only=True).sort_by("rank")
    n = params.samples_per_shard
    specs = pool_specs(params.manifest)
    jobs = [
        OutputShard(
            index=s,
            rows=chosen.slice(first, n),
            output=params.output,
            specs=specs,
            key_digits=max(4, len(str(n - 1))),
            fetch_batch=params.fetch_batch,
        )
        for s, first in enumerate(range(0, chosen.num_rows, n))
    ]
    job = Job(step="export", units=jobs, work=export_shard, name=lambda shard: f"{shard.name}.tar",
              samples=lambda row: row["samples"])
    done = run(job, _executor(params))
    done.raise_for_failed("a rerun writes them (and skips the rest)")
    summaries = sorted(done.rows, key=lambda s: s["shard"])
    failed: Counter = Counter()
    for s in summaries:
        failed.update(s["failed"])
    report = ExportReport(
        output_uri=params.output_uri,
        shards=len(summaries),
        written=sum(s["written"] for s in summaries),
        samples=sum(s["samples"] for s in summaries),
        failed=dict(failed),
        seconds=round(time.perf_counter() - start, 3),
    )
    index = {
        "manifest_uri": params.manifest_uri,
        "content_sha256": sidecar.get("content_sha256"),
        "samples_per_shard": n,
        "samples": report.samples,
        "failed": report.failed,
        "shards": [{k: s[k] for k in ("shard", "samples", "first_rank", "last_rank")} for s in summaries],
    }
    params.output.join("index.json").publish_bytes(json.dumps(index, indent=1).encode())
    params.output.join("_SUCCESS").publish_bytes(b"")
    return report
