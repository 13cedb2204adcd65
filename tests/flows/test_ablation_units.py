"""Where the ablation's units run: auto picks Ray only where a cluster is configured, a unit fits on one node
(CPUs and GPUs both), the tracking URI a Ray worker gets resolves to the same store, and a unit runs under the
executor's one failure policy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from core.settings import ConfigError, parse_config
from flows import ablation_units
from flows.ablation_params import AblationParams
from flows.ablation_units import UnitFailed, absolute_tracking, pick_executor, room, run_local
from tasks.executor import RetryPolicy

BASE = {"model": "/m", "manifest_uri": "/x.parquet", "output_uri": "/out",
        "robot": {"sources": [{"name": "r", "format": "lerobot", "uri": "/y"}]}}


def test_auto_uses_ray_only_where_a_cluster_is_configured(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert pick_executor("auto", None) == "local"
    assert pick_executor("auto", "ray://head:10001") == "ray"
    assert pick_executor("local", "ray://head:10001") == "local" and pick_executor("ray", None) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert pick_executor("auto", None) == "ray"


def test_room_counts_units_per_node():
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
             {"Alive": True, "Resources": {"CPU": 3.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert room(nodes, cpus=1, gpus=0) == 19
    assert room(nodes, cpus=4, gpus=0) == 4  # a unit never spans nodes: 3 CPUs hold no 4-CPU unit
    assert room(nodes, cpus=1, gpus=1) == 2
    assert room(nodes, cpus=1, gpus=0.5) == 4
    assert room(nodes, cpus=32, gpus=0) == 0


def test_tracking_uri_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking("sqlite:///mlflow.db") == f"sqlite:///{Path(tmp_path, 'mlflow.db').resolve()}"
    assert absolute_tracking("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_tracking("http://mlflow:5000") == "http://mlflow:5000"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("unit_gpus", 1.5, "unit_gpus: Value error, unit_gpus above 1 must be a whole number"),
    ("unit_cpus", 0, "unit_cpus: Input should be greater than or equal to 1"),
    ("executor", "threads", "executor: Input should be 'auto', 'local' or 'ray'"),
    ("max_parallel_units", 0, "max_parallel_units: Input should be greater than or equal to 1"),
])
def test_bad_execution_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(AblationParams, {**BASE, field: value})


def test_execution_settings_do_not_change_the_result_params():
    local = parse_config(AblationParams, BASE)
    wide = parse_config(AblationParams, {**BASE, "executor": "ray", "unit_cpus": 4, "unit_gpus": 1})
    assert local.result_params() == wide.result_params()


def test_a_transient_fault_in_a_unit_is_retried_under_the_one_policy(monkeypatch):
    calls: Counter = Counter()

    def unit(plan, arm, seed, budget):
        calls[arm, seed] += 1
        if arm == "random" and calls[arm, seed] == 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        if arm == "curated":
            raise ValueError("bad manifest")
        return f"{arm}-{seed}"

    monkeypatch.setattr(ablation_units, "run_unit_task", unit)
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 0.0)
    assert run_local(None, [("none", 0), ("random", 0)], None, label="t") == ["none-0", "random-0"]
    assert calls == {("none", 0): 1, ("random", 0): 2}  # the reset retried once
    with pytest.raises(UnitFailed, match=r"1 ablation unit\(s\) failed .*: arm curated, seed 0: ValueError: bad"):
        run_local(None, [("curated", 0), ("none", 1)], None, label="t")
    assert calls[("curated", 0)] == 1 and ("none", 1) not in calls  # tried once; no unit starts after a failure
