"""The curated manifest: one row per pool sample (``core.contracts.MANIFEST``) plus a sidecar JSON, and a reader
that streams the selected samples back from their original shards.

    pd.read_parquet("s3://bucket/runs/RUN/manifest.parquet").query("selected")      # any consumer, one line
    for batch in iter_selected("s3://bucket/runs/RUN/manifest.parquet"): ...       # images + texts

Every function takes the manifest as a ``Location`` or as a URI string (with ``storage``, the settings that reach
it, where it is not on default ones).

Rows carry their sample's location in its shard (``core.contracts.LOCATION``): ``iter_selected`` then fetches only
the selected samples with range reads, and reads whole shards only where locations are null (a manifest written
before they existed, or curated from an older embedding cache).

The data may have moved on since the manifest was written. A selected sample whose shard is gone is quarantined as
``missing_shard``, one whose shard was modified after the manifest's sidecar as ``changed_shard`` (its bytes may not
be what was scored), and so is one the shard no longer holds; ``stale_location`` where a recorded span or row group
no longer holds its sample. Each is a row of the quarantine per sample, never an exception.

This module and its imports need only the base install (pyarrow, fsspec/s3fs, pydantic, Pillow): no torch,
Ray, Prefect or MLflow, so a consumer can read what a run selected from anywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.contracts import LOCATION_NAMES, MANIFEST, conform
from core.location import Location
from core.read import Quarantine, located, read_located, read_shard
from core.settings import SourceSpec, StorageConfig

HASHED_COLUMNS = ("sample_id", "score", "rank", "selected")
# Dictionary-encoded columns: the ones that repeat (one value per shard). Ids, keys, scores and ranks are (nearly)
# unique, and trying a dictionary on them made writing a manifest twice as slow and its files larger.
DICTIONARY_COLUMNS = ["source", "shard_uri"]


def sidecar_uri(manifest_uri: str) -> str:
    return manifest_uri.rsplit(".parquet", 1)[0] + ".json"


def _sidecar(where: Location) -> Location:
    return Location(sidecar_uri(where.uri), where.storage)


def write_manifest(
    manifest: str | Location, parts: Iterable[pa.Table], sidecar: dict[str, Any], storage: StorageConfig | None = None
) -> dict[str, Any]:
    """Stream ``parts`` (manifest-contract tables; location columns they lack are written null) into one Parquet
    file, then publish the sidecar with the counts and a content hash of (sample_id, score, rank, selected).
    Returns the sidecar."""
    digest = hashlib.sha256()
    rows = selected = 0
    per_source: dict[str, dict[str, int]] = {}
    where = Location.of(manifest, storage)
    with where.publish() as f, manifest_writer(f) as writer:
        for part in parts:
            part = conform(part, MANIFEST)
            writer.write_table(part)
            hash_part(digest, part)
            rows += part.num_rows
            selected += pc.sum(part["selected"]).as_py() or 0
            for src, n, s in zip(*_counts(part), strict=True):
                c = per_source.setdefault(src, {"pool": 0, "selected": 0})
                c["pool"] += n
                c["selected"] += s
    sidecar = {
        **sidecar,
        "rows": rows,
        "selected": selected,
        "per_source": per_source,
        "content_sha256": digest.hexdigest(),
        "manifest_uri": where.uri,
    }
    _sidecar(where).publish_bytes(json.dumps(sidecar, indent=1, sort_keys=True).encode())
    return sidecar


def manifest_writer(sink: Any) -> pq.ParquetWriter:
    """A Parquet writer of manifest-contract rows into ``sink`` (an open file)."""
    return pq.ParquetWriter(sink, MANIFEST, use_dictionary=DICTIONARY_COLUMNS)


def hash_part(digest: Any, part: pa.Table) -> None:
    """Feed the hashed columns of one manifest part (sample_id, score, rank, selected: the Arrow buffers) into
    ``digest``: what ``content_sha256`` covers, never the file bytes, so it names the content whatever the writer."""
    for name in HASHED_COLUMNS:
        for buf in part[name].combine_chunks().buffers():
            digest.update(b"" if buf is None else buf.to_pybytes())


def _counts(part: pa.Table) -> tuple[list[str], list[int], list[int]]:
    grouped = part.group_by("source").aggregate([("sample_id", "count"), ("selected", "sum")])
    return (
        grouped["source"].to_pylist(),
        grouped["sample_id_count"].to_pylist(),
        [int(x or 0) for x in grouped["selected_sum"].to_pylist()],
    )


def read_sidecar(manifest: str | Location, storage: StorageConfig | None = None) -> dict[str, Any]:
    return json.loads(_sidecar(Location.of(manifest, storage)).read_bytes())


def manifest_files(manifest: str | Location, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, list[str]]:
    """The manifest's Parquet files in pool order, as (pyarrow filesystem, paths): the file itself, or a partitioned
    manifest's part files (as its sidecar lists them, else sorted by name)."""
    where = Location.of(manifest, storage)
    fs, path = where.arrow_filesystem()
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return fs, [path]
    names = read_sidecar(where).get("files")
    if names is None:
        found = fs.get_file_info(pafs.FileSelector(path))
        names = sorted(f.base_name for f in found if f.base_name.endswith(".parquet"))
    return fs, [f"{path.rstrip('/')}/{name}" for name in names]


def read_manifest(
    manifest: str | Location, storage: StorageConfig | None = None, *, selected_only: bool = False
) -> pa.Table:
    """The manifest as one table of the ``MANIFEST`` schema (null locations where the file predates them)."""
    fs, path = Location.of(manifest, storage).arrow_filesystem()
    table = pq.read_table(path, filesystem=fs, filters=[("selected", "=", True)] if selected_only else None)
    return conform(table, MANIFEST)


def modified(where: str | Location, storage: StorageConfig | None = None) -> float | None:
    """When the file at ``where`` was last written (seconds since the epoch; None where the store does not say).
    Raises FileNotFoundError for no file."""
    where = Location.of(where, storage)
    info = where.fs.info(where.path)
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


def _shard_problem(shard: Location, written: float | None) -> tuple[str, str] | None:
    """(reason, detail) when the shard is gone or was rewritten after the manifest (``written``), else None."""
    try:
        changed = modified(shard)
    except FileNotFoundError as err:
        return "missing_shard", f"not found: {err}"
    if written is not None and changed is not None and changed > written:
        return "changed_shard", f"modified at {changed:.0f}, after the manifest was written ({written:.0f})"
    return None


def read_samples(
    spec: SourceSpec,
    shard_uri: str,
    rows: pa.Table,
    *,
    batch_size: int = 256,
    quarantine: Quarantine,
    written: float | None = None,
) -> Iterator[pa.Table]:
    """The samples of one shard of ``spec`` (reached with its storage) that the manifest ``rows`` name, with their
    ``score`` and ``rank``, in shard order: range reads at the rows' locations when every row has one, else the
    whole shard read and filtered.

    Every named sample is either yielded or has a row in ``quarantine``: ``missing_shard`` (the shard is gone),
    ``changed_shard`` (modified after ``written``, the manifest's time, or no longer holding the sample), or the
    reader's own reason. A shard the reader set aside whole keeps its one shard-level row."""
    wanted = dict(
        zip(
            rows["sample_id"].to_pylist(),
            zip(rows["score"].to_pylist(), rows["rank"].to_pylist(), strict=True),
            strict=True,
        )
    )
    problem = _shard_problem(Location(shard_uri, spec.storage), written)
    before, accounted = len(quarantine.rows), set()
    if problem is None:
        if located(spec, rows):
            tables = read_located(spec, shard_uri, rows, quarantine=quarantine, batch_size=batch_size)
        else:
            tables = read_shard(spec, shard_uri, quarantine=quarantine, batch_size=batch_size)
        try:
            for table in tables:
                table = table.filter(pc.is_in(table["sample_id"], pa.array(list(wanted)))).drop_columns(LOCATION_NAMES)
                if table.num_rows:
                    ids = table["sample_id"].to_pylist()
                    accounted.update(ids)
                    table = table.append_column("score", pa.array([wanted[i][0] for i in ids], pa.float32()))
                    yield table.append_column("rank", pa.array([wanted[i][1] for i in ids], pa.int64()))
        except FileNotFoundError as err:  # deleted while it was being read
            problem = "missing_shard", f"not found: {err}"
        else:
            if any(row["sample_id"] is None for row in quarantine.rows[before:]):
                return  # the reader set the whole shard aside: its row says why
            problem = "changed_shard", "the shard no longer holds the sample"
        accounted.update(row["sample_id"] for row in quarantine.rows[before:])
    reason, detail = problem
    for sample_id in wanted:
        if sample_id not in accounted:
            quarantine.add(shard_uri=shard_uri, reason=reason, detail=detail, sample_id=sample_id)


def pool_specs(manifest: str | Location, storage: StorageConfig | None = None) -> dict[str, SourceSpec]:
    """The run's pool sources by name, from the sidecar, reached with the manifest's storage settings."""
    where = Location.of(manifest, storage)
    return {s["name"]: SourceSpec.model_validate(s).bind(where.storage) for s in read_sidecar(where)["pool"]}


def iter_selected(
    manifest: str | Location,
    storage: StorageConfig | None = None,
    *,
    batch_size: int = 256,
    quarantine: Quarantine | None = None,
    rows: pa.Table | None = None,
) -> Iterator[pa.Table]:
    """Stream the selected samples (sample contract without the location columns, + ``score`` and ``rank``);
    ``rows`` (rows of this manifest, e.g. a sample of the unselected ones) are streamed instead where given.

    Batches come in shard order (shards sorted by URI, rows in their order within a shard), not in rank order:
    each shard is read once, front to back, and only the selected samples' bytes where the manifest records their
    locations (``read_samples``). Sort by ``rank`` afterwards where order matters. The pool's source specs come
    from the sidecar, so the manifest URI (and the storage settings) is all a consumer needs."""
    where = Location.of(manifest, storage)
    specs = pool_specs(where)
    written = modified(_sidecar(where))  # published last: the manifest's time
    chosen = rows if rows is not None else read_manifest(where, selected_only=True)
    quarantine = quarantine if quarantine is not None else Quarantine(stage="iter_selected")
    for shard_uri in sorted(pc.unique(chosen["shard_uri"]).to_pylist()):
        rows = chosen.filter(pc.equal(chosen["shard_uri"], shard_uri))
        spec = specs[rows["source"][0].as_py()]
        yield from read_samples(spec, shard_uri, rows, batch_size=batch_size, quarantine=quarantine, written=written)
