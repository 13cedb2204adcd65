"""Preparing batches ahead of the model: order, how far ahead, what the model waited on, and how many tasks the
cluster's free CPUs hold (no Ray: the submit/fetch pair is plain functions here)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from tasks.embed_shards import prepare_depth
from tasks.prepare import in_order


def test_batches_come_back_in_order_with_at_most_depth_in_preparation():
    tables = [pa.table({"i": [i]}) for i in range(7)]
    submitted, fetched = [], []

    def submit(table):
        submitted.append(table["i"][0].as_py())
        assert len(submitted) - len(fetched) <= 3  # never more than depth ahead of the model
        return table["i"][0].as_py()

    def fetch(handle):
        fetched.append(handle)
        return f"prepared {handle}"

    seconds: Counter = Counter()
    out = list(in_order(iter(tables), submit, fetch, depth=3, seconds=seconds))
    assert [t["i"][0].as_py() for t, _ in out] == list(range(7))
    assert [p for _, p in out] == [f"prepared {i}" for i in range(7)]
    assert submitted == fetched == list(range(7))
    assert set(seconds) == {"read", "prepare"}
    # the first batch is handed out once three are in preparation, before the rest are read
    submitted.clear()
    fetched.clear()
    first = next(in_order(iter(tables), submit, fetch, depth=3, seconds=Counter()))
    assert first[0] is tables[0] and submitted == [0, 1, 2] and fetched == [0]


def test_an_empty_shard_yields_nothing():
    assert list(in_order(iter([]), lambda t: t, lambda h: h, depth=2, seconds=Counter())) == []


def test_every_free_cpu_gets_a_task_and_one_waits_in_line():
    assert prepare_depth(0.5, prepare_cpus=0.5, actors=1) == 2  # 2-core default: one task runs, one queued
    assert prepare_depth(14.5, prepare_cpus=1, actors=1) == 15  # a 16-core GPU node, one actor
    assert prepare_depth(14, prepare_cpus=1, actors=4) == 5  # the free CPUs shared by four actors
    assert prepare_depth(0.1, prepare_cpus=1, actors=2) == 2  # at least one each
    # fractional tasks: no more at once than whole free CPUs (Ray would restart workers past one per CPU)
    assert prepare_depth(0.75, prepare_cpus=0.25, actors=1) == 2
    assert prepare_depth(6, prepare_cpus=0.5, actors=1) == 7
