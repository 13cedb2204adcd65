"""``emt midtrain`` killed with SIGKILL mid-training: the forked child that trains goes with it (within seconds,
with every process it started), so no model is registered and the runs are not left RUNNING."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from core.manifest import write_manifest
from core.read import Quarantine, read_source

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 600  # until the first step is logged: Prefect's ephemeral API is slow to start on a loaded machine
GONE_WITHIN = 15  # seconds for the child and everything it started to be gone after the parent's SIGKILL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(START_TIMEOUT + 300)]


def _manifest(corpus, uri: str) -> str:
    parts = []
    for spec in corpus.pool:
        table = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        n = table.num_rows
        parts.append(table.select(["sample_id", "source", "shard_uri", "key"])
                     .append_column("score", pa.array([1.0 - i / n for i in range(n)], pa.float32()))
                     .append_column("rank", pa.array(range(n), pa.int64()))
                     .append_column("selected", pc.less(pa.array(range(n)), 2)))
    write_manifest(uri, parts, {"run_id": "killed", "pool": [s.model_dump(mode="json") for s in corpus.pool]})
    return uri


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killing_the_command_ends_its_training(local_corpus, tiny_vlm_dir, tmp_path):
    store = tmp_path / "mlflow.db"
    config = tmp_path / "midtrain.yaml"
    config.write_text(yaml.safe_dump({
        "model": tiny_vlm_dir, "manifest_uri": _manifest(local_corpus, str(tmp_path / "m" / "manifest.parquet")),
        "output_uri": str(tmp_path / "out"), "run_name": "killed", "registered_model": "emt-killed",
        "train": {"steps": 100_000, "batch_size": 2, "log_every": 1},  # runs until it is ended
        "mlflow": {"tracking_uri": f"sqlite:///{store}"},
    }))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    out = (tmp_path / "stdout").open("w+")
    emt = subprocess.Popen([sys.executable, "-m", "flows.cli", "midtrain", "--config", str(config)],
                           cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "midtrain step 2/" not in (tmp_path / "stdout").read_text():
            assert emt.poll() is None and time.monotonic() < deadline, (tmp_path / "stdout").read_text()[-3000:]
            time.sleep(0.5)
        seen.update({p.pid: p for p in psutil.Process(emt.pid).children(recursive=True)})
        assert seen, "the command trains in a child process"
        emt.send_signal(signal.SIGKILL)
        emt.wait()
        killed = time.monotonic()
        while any(_alive(p) for p in seen.values()) and time.monotonic() - killed < 60:
            time.sleep(0.2)
        took = time.monotonic() - killed
        survivors = [f"{p.pid} {p.name()}" for p in seen.values() if _alive(p)]
    finally:
        for proc in seen.values():
            if _alive(proc):
                proc.kill()
    log = (tmp_path / "stdout").read_text()
    assert not survivors and took < GONE_WITHIN, f"{survivors} still running {took:.1f} s after the kill"
    assert "emt midtrain: the command's process was killed; the run stops" in log, log[-3000:]
    with sqlite3.connect(store) as db:
        versions = db.execute("select count(*) from model_versions").fetchone()[0]
        runs = [row[0] for row in db.execute("select status from runs")]
    assert versions == 0 and runs == ["KILLED"], (versions, runs)  # marked before the run winds down
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = [row[0] for row in db.execute("select state_type from flow_run")]
    assert states and "RUNNING" not in states, states
