"""The funnel subtracts each filter's removals in order, per source, from what reached the filters."""

from __future__ import annotations

from core.contracts import ERRORS, table_from_rows
from tasks.funnel import funnel, funnel_total, screened_counts


def test_each_stage_subtracts_its_filter_per_source():
    errors = table_from_rows([
        {"sample_id": "web/0.tar/a", "shard_uri": "s", "stage": "blocklist", "reason": "blocklist:csam"},
        {"sample_id": "web/0.tar/b", "shard_uri": "s", "stage": "quality", "reason": "quality:too_small"},
        {"sample_id": "web/0.tar/c", "shard_uri": "s", "stage": "read", "reason": "undecodable_image"},
        {"sample_id": "arm/0/1", "shard_uri": "r", "stage": "quality", "reason": "quality:too_small"},  # not pool
        {"sample_id": "docs/1.parquet/4", "shard_uri": "d", "stage": "blocklist", "reason": "blocklist:urls"},
    ], ERRORS)
    screened = screened_counts(errors, ["web", "docs"])
    assert screened == {"docs": {"blocklist:urls": 1}, "web": {"blocklist:csam": 1, "quality:too_small": 1}}
    filtered = {"web": {"quality:clip_score": 2, "dedup:semantic": 3}}
    per_source = {"web": {"pool": 20, "selected": 5}, "docs": {"pool": 10, "selected": 4}}
    by_source = funnel(per_source, screened, filtered)
    assert by_source == {
        "docs": {"pool": 11, "after_blocklist": 10, "after_quality": 10, "after_dedup": 10, "selected": 4},
        "web": {"pool": 22, "after_blocklist": 21, "after_quality": 18, "after_dedup": 15, "selected": 5}}
    assert funnel_total(by_source) == {"pool": 33, "after_blocklist": 31, "after_quality": 28, "after_dedup": 25,
                                       "selected": 9}
