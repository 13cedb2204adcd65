"""Readers: any source (WebDataset tars, Parquet shards, LeRobot v3) as a stream of sample-contract tables.

    quarantine = Quarantine()
    for table in read_source(spec, quarantine=quarantine):     # spec.storage reaches it (SourceSpec.bind)
        ...                      # pa.Table with core.contracts.SAMPLE's columns, at most batch_size rows
    quarantine.table()           # what was set aside, with reasons

``list_shards`` + ``read_shard`` split the same work by shard, for distributed readers; ``read_located`` reads
chosen samples of one shard by their recorded locations (``core.contracts.LOCATION``) with range reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from core.read.checks import ImageCheck, Quarantine, Reading
from core.read.formats import FORMATS
from core.settings import SourceSpec
from core.storage import is_storage_fault

__all__ = [
    "ImageCheck",
    "Quarantine",
    "list_shards",
    "list_shards_or_quarantine",
    "located",
    "read_located",
    "read_shard",
    "read_source",
    "source_root",
]


def source_root(spec: SourceSpec) -> str:
    """The directory shard names are taken relative to (so sample ids do not depend on where data lives)."""
    return FORMATS[spec.format].root(spec)


def list_shards(spec: SourceSpec) -> list[str]:
    """Every shard URI of a source, sorted; for LeRobot, its data files."""
    return FORMATS[spec.format].list_shards(spec)


def list_shards_or_quarantine(spec: SourceSpec, quarantine: Quarantine) -> list[str]:
    """``list_shards``, with a source whose content cannot be listed (missing files, broken metadata) or that
    matches nothing recorded in ``quarantine``.

    A storage fault (denied, unreachable, missing bucket, transient) is raised, not quarantined: it is the
    storage's, not the source's (the caller names the setting); any other exception (a ``KeyError`` from the
    code) is a bug and crashes."""
    try:
        shards = list_shards(spec)
    except (OSError, ValueError, pa.ArrowException) as err:
        if is_storage_fault(err):
            raise
        quarantine.add(shard_uri=spec.uri, reason="unreadable_source", detail=f"{type(err).__name__}: {err}")
        return []
    if not shards:
        quarantine.add(shard_uri=spec.uri, reason="no_shards", detail="the shard spec matched no file")
    return shards


def read_shard(
    spec: SourceSpec,
    shard_uri: str,
    *,
    quarantine: Quarantine,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
) -> Iterator[pa.Table]:
    """Stream one shard of ``spec`` as sample tables; bad input goes to ``quarantine``."""
    reading = Reading(spec, source_root(spec), quarantine, batch_size, image_check)
    yield from FORMATS[spec.format].read(reading, shard_uri)


def located(spec: SourceSpec, wanted: pa.Table) -> bool:
    """True when every row of ``wanted`` (one shard's rows of a manifest) has the location its format is read by."""
    columns = FORMATS[spec.format].located_by
    return bool(columns) and all(c in wanted.column_names and wanted[c].null_count == 0 for c in columns)


def read_located(
    spec: SourceSpec,
    shard_uri: str,
    wanted: pa.Table,
    *,
    quarantine: Quarantine,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
) -> Iterator[pa.Table]:
    """The samples of one shard that ``wanted`` names (``key`` and the location columns, ``located`` true), as sample
    tables in shard order, read with range reads: a tar's spans, a Parquet file's row groups."""
    if not located(spec, wanted):
        raise ValueError(f"{shard_uri}: rows without the locations a {spec.format} shard is read by")
    reading = Reading(spec, source_root(spec), quarantine, batch_size, image_check)
    yield from FORMATS[spec.format].read_located(reading, shard_uri, wanted)


def read_source(
    spec: SourceSpec,
    *,
    quarantine: Quarantine,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
) -> Iterator[pa.Table]:
    """Stream every shard of ``spec``, one after the other."""
    for shard in list_shards_or_quarantine(spec, quarantine):
        yield from read_shard(spec, shard, quarantine=quarantine, batch_size=batch_size, image_check=image_check)
