"""The source formats as classes in one registry: how a format's shards are listed, named and read — whole or by
recorded location — said once per format instead of switched on by every reader entry point and check. Each
format's reader takes the source and its settings whole (``Reading``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa

from core.read import lerobot, parquet, webdataset
from core.read.checks import Reading
from core.settings import SourceSpec
from core.storage import expand_shards, shard_root


class SourceFormat(ABC):
    """A pool format by default: shards under a prefix, glob or braces, named relative to their directory."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    located_by: ClassVar[tuple[str, ...]] = ()  # the location columns its range reader needs; none: no range reads
    robot: ClassVar[bool] = False  # robot data: the target a run curates towards, never part of the pool

    def root(self, spec: SourceSpec) -> str:
        """The directory shard names are taken relative to (so sample ids do not depend on where data lives)."""
        return shard_root(spec.uri)

    def list_shards(self, spec: SourceSpec) -> list[str]:
        """Every shard URI of ``spec``, sorted."""
        return expand_shards(spec.uri, spec.storage, suffixes=self.suffixes)

    @abstractmethod
    def read(self, reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
        """One shard as sample tables; bad input goes to ``reading.quarantine``."""

    def read_located(self, reading: Reading, shard_uri: str, wanted: pa.Table) -> Iterator[pa.Table]:
        """The samples of one shard that ``wanted`` names by their ``located_by`` columns, with range reads."""
        raise NotImplementedError(f"{self.name} records no sample locations")


class WebDatasetFormat(SourceFormat):
    name = "webdataset"
    suffixes = webdataset.SHARD_SUFFIXES
    located_by = ("byte_offset", "byte_length")

    def read(self, reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
        return webdataset.read_webdataset_shard(reading, shard_uri)

    def read_located(self, reading: Reading, shard_uri: str, wanted: pa.Table) -> Iterator[pa.Table]:
        return webdataset.read_webdataset_spans(reading, shard_uri, wanted)


class ParquetFormat(SourceFormat):
    name = "parquet"
    suffixes = parquet.SHARD_SUFFIXES
    located_by = ("row_group",)

    def read(self, reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
        return parquet.read_parquet_shard(reading, shard_uri)

    def read_located(self, reading: Reading, shard_uri: str, wanted: pa.Table) -> Iterator[pa.Table]:
        return parquet.read_parquet_rows(reading, shard_uri, wanted)


class LeRobotFormat(SourceFormat):
    """A LeRobot v3 dataset: its root holds the metadata, its shards are the data files the metadata lists. Its
    samples are decoded frames, so it records no locations (and robot data is never in a manifest)."""

    name = "lerobot"
    robot = True

    def root(self, spec: SourceSpec) -> str:
        return spec.uri.rstrip("/")

    def list_shards(self, spec: SourceSpec) -> list[str]:
        return lerobot.data_files(lerobot.load_meta(spec.uri, spec.storage, image_key=spec.image_key))

    def read(self, reading: Reading, shard_uri: str) -> Iterator[pa.Table]:
        return lerobot.read_lerobot_shard(reading, shard_uri)


FORMATS: dict[str, SourceFormat] = {f.name: f() for f in (WebDatasetFormat, ParquetFormat, LeRobotFormat)}
