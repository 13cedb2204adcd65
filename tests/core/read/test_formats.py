"""The format registry and the configuration agree: every format a source can name has a class that reads it."""

from __future__ import annotations

from typing import get_args

from core.read.formats import FORMATS
from core.settings import SourceSpec


def test_every_format_a_source_can_name_is_registered() -> None:
    assert set(FORMATS) == set(get_args(SourceSpec.model_fields["format"].annotation))


def test_only_lerobot_is_robot_data_and_only_pool_formats_record_locations() -> None:
    assert {name for name, f in FORMATS.items() if f.robot} == {"lerobot"}
    assert {name for name, f in FORMATS.items() if f.located_by} == {"webdataset", "parquet"}
