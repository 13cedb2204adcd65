"""A Ray cluster lost mid-run (its raylet killed): ``emt curate`` ends with one clear line and a non-zero exit, the
flow runs are not left RUNNING, and no process of the run survives it (the ephemeral Prefect server, Ray's)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from estimator.backbones.tiny import save_tiny_backbone

ROOT = Path(__file__).resolve().parents[2]
LOST = "the Ray cluster was lost during the run (its raylet exited)"
RUN_TIMEOUT = 900  # seconds for the whole run: under a minute when idle, minutes on a loaded 2-core machine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT + 300)]


def _config(tmp_path: Path, corpus) -> Path:
    backbone = save_tiny_backbone("open_clip", str(tmp_path / "backbone"), seed=0)
    config = {
        "pool": [s.model_dump(mode="json") for s in corpus.pool],
        "robot": [s.model_dump(mode="json") for s in corpus.robot],
        "backbone": backbone.model_dump(mode="json"),
        "fraction": 0.2,
        "output_uri": str(tmp_path / "runs"),
        "run_name": "lost",
        "ray": {"embed_batch_size": 1, "read_batch_size": 1},  # slow enough to be caught mid-embedding
        "report_per_set": 0,
        "mlflow": {"enabled": False},
    }
    path = tmp_path / "curate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_raylet_is_one_line_and_leaves_nothing_behind(local_corpus, tmp_path):
    config = _config(tmp_path, local_corpus)
    ray_tmp = tempfile.mkdtemp(prefix="emt-lost-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "EMT_RAY_TMPDIR": ray_tmp,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("RAY_ADDRESS", None)
    env.pop("PREFECT_API_URL", None)
    out, err = (tmp_path / "stdout").open("w+"), (tmp_path / "stderr").open("w+")
    emt = subprocess.Popen([sys.executable, "-m", "flows.cli", "curate", "--config", str(config)],
                           cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
    seen: dict[int, psutil.Process] = {}
    killed = False
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while emt.poll() is None and time.monotonic() < deadline:
            try:
                seen.update({p.pid: p for p in psutil.Process(emt.pid).children(recursive=True)})
            except psutil.NoSuchProcess:
                break
            logs = (tmp_path / "stdout").read_text() + (tmp_path / "stderr").read_text()
            if not killed and "shards to embed" in logs:
                raylets = [p for p in seen.values() if _alive(p) and p.name() == "raylet"]
                assert raylets, "the run's raylet is among its processes"
                for raylet in raylets:
                    raylet.kill()
                killed = True
            time.sleep(0.3)
        try:
            code = emt.wait(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logs = (tmp_path / "stdout").read_text()[-1500:] + (tmp_path / "stderr").read_text()[-1500:]
            pytest.fail(f"emt curate still running after {RUN_TIMEOUT} s (raylet killed: {killed}); output:\n{logs}")
        reaped = time.monotonic() + 120  # the run's last processes are reaped once it has exited
        while any(_alive(p) for p in seen.values()) and time.monotonic() < reaped:
            time.sleep(0.2)
        survivors = [f"{p.pid} {p.name()}" for p in seen.values() if _alive(p)]
    finally:
        for proc in [psutil.Process(emt.pid), *seen.values()] if emt.poll() is None else seen.values():
            if _alive(proc):
                proc.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert killed, stderr[-2000:]
    assert code != 0
    assert stderr.splitlines()[-1] == f"emt curate: {LOST}; run the same command again to resume", stderr[-2000:]
    assert stderr.count(LOST) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert not survivors, f"left behind: {survivors}"
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = [row[0] for row in db.execute("select state_type from flow_run")]
    assert states and "RUNNING" not in states, states
