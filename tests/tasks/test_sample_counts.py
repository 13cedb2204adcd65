"""Error rates count samples: a shard lost whole counts what it held (footer, else a stated estimate)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from core.contracts import ERRORS, table_from_rows
from core.storage import write_parquet
from tasks.sample_counts import ErrorRateExceeded, check_error_rate, check_k_fits, count_errors


def _errors(rows: list[dict]) -> pa.Table:
    return table_from_rows([{"stage": "read", "detail": "", **r} for r in rows], ERRORS)


def test_a_lost_shard_counts_its_samples_not_one_row(tmp_path):
    wrong = str(tmp_path / "wrong.parquet")
    write_parquet(pa.table({"x": list(range(40))}), wrong)  # readable footer, wrong schema: 40 samples lost
    errors = _errors(
        [
            {"shard_uri": wrong, "reason": "wrong_schema"},
            {"shard_uri": "s3://b/a/2.tar", "reason": "unreadable_shard"},  # unknowable: mean of a's intact shards
            {"shard_uri": "s3://b/a/1.tar", "sample_id": "a/1/x", "reason": "missing_text"},
            {"shard_uri": "s3://b/nothing/", "reason": "no_shards"},  # an allowed-empty source holds nothing
        ]
    )
    usable = {"s3://b/a/0.tar": 10, "s3://b/a/1.tar": 9, wrong: 0, "s3://b/a/2.tar": 0}
    source_of = {"s3://b/a/0.tar": "a", "s3://b/a/1.tar": "a", wrong: "p", "s3://b/a/2.tar": "a"}
    count = count_errors(errors, usable, source_of, None)
    assert (count.usable, count.quarantined, count.lost, count.estimated) == (19, 1, 50, 10)
    assert count.total == 70


def test_error_rate_message_is_one_line_and_never_rounds_both_sides_alike():
    count = count_errors(_errors([{"shard_uri": "a", "sample_id": "a/1", "reason": "missing_text"}]),
                         {"a": 1000}, {"a": "a"}, None)
    with pytest.raises(ErrorRateExceeded) as err:
        check_error_rate(count, 0.000998, "out/errors.parquet")
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, ValueError)  # the CLI prints ValueErrors as one line
    assert "1 of 1001 input samples" in message and "0.0999% > max_error_rate 0.0998%" in message
    check_error_rate(count, 0.001, "out/errors.parquet")  # 1/1001 is within 0.1%


def test_k_larger_than_a_known_pool_is_refused():
    with pytest.raises(ValueError, match="larger than the pool"):
        check_k_fits(30, k=31, fraction=None)
    check_k_fits(None, k=10**9, fraction=None)  # unknown size: checked after the read
    check_k_fits(30, k=30, fraction=None)


def test_samples_the_filters_removed_are_no_errors():
    rows = [{"shard_uri": "a", "sample_id": f"a/{i}", "stage": stage, "reason": f"{stage}:x"}
            for i, stage in enumerate(["blocklist", "quality", "quality", "dedup"])]
    errors = _errors(rows + [{"shard_uri": "a", "sample_id": "a/9", "reason": "undecodable_image"}])
    count = count_errors(errors, {"a": 5}, {"a": "a"}, None)
    assert (count.usable, count.quarantined, count.lost) == (5, 1, 0)
    check_error_rate(count, 0.2, "out/errors.parquet")  # 1 of 6: the four removed on purpose do not count
