"""A local Ray listens on loopback only: its GCS, raylet, agents, driver and workers, none on the machine's network;
it needs nothing from, and writes nothing to, Ray's shared default temporary directory; and its workers run at the
driver's priority.

Checked in a fresh process, as ``emt curate`` starts one: the test session's own Ray has been through other tests
(Ray Data's helper actors, Ray Train) whose sockets this test is not about."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ray._common.utils import get_default_ray_temp_dir

from flows.runtime import local_worker_niceness, ray_default_temp

SCRIPT = """
import json, os, sys, psutil, ray
from flows.runtime import local_ray

@ray.remote(num_cpus=0.1)
class Echo:
    def niceness(self):
        import os
        return os.nice(0)

with local_ray(temp_dir=sys.argv[1], num_cpus=2):
    worker_niceness = ray.get(Echo.remote().niceness.remote())  # a worker is up and serving
    driver, listening = psutil.Process(), []
    for proc in [driver, *driver.children(recursive=True)]:
        try:
            listening += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
print(json.dumps({"listening": listening, "niceness": [os.nice(0), worker_niceness]}))
"""


def test_local_ray_listens_on_loopback_only_and_runs_workers_at_the_drivers_priority(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    fresh = tmp_path / "tmp"  # the child's TMPDIR: Ray's default temporary directory would be fresh/ray
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "RAY_ADDRESS", "RAY_worker_niceness")}
    env["TMPDIR"] = str(fresh)
    with tempfile.TemporaryDirectory(prefix="emt-lo-", dir="/tmp") as ray_tmp:  # Ray's socket paths must be short
        done = subprocess.run([sys.executable, "-c", SCRIPT, ray_tmp], cwd=repo, capture_output=True, text=True,
                              timeout=540, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (fresh / "ray").exists(), "the local Ray wrote to Ray's shared default temporary directory"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    driver, worker = seen["niceness"]
    assert worker == driver, f"the local Ray's workers run at nice {worker}, the driver at {driver}"
    listening = [tuple(s) for s in seen["listening"]]
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), listening
    exposed = [s for s in listening if not ipaddress.ip_address(s[1].removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


def test_ray_default_temp_is_the_runs_own_folder_for_the_block(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    with ray_default_temp(str(tmp_path)):
        assert os.environ["RAY_TMPDIR"] == str(tmp_path)
        assert get_default_ray_temp_dir() == str(tmp_path / "ray") and (tmp_path / "ray").is_dir()
    assert "RAY_TMPDIR" not in os.environ
    monkeypatch.setenv("RAY_TMPDIR", "/elsewhere")
    with pytest.raises(RuntimeError), ray_default_temp(str(tmp_path)):
        raise RuntimeError
    assert os.environ["RAY_TMPDIR"] == "/elsewhere"


def test_a_users_ray_worker_niceness_wins(monkeypatch):
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    assert local_worker_niceness() == {"worker_niceness": 0}
    monkeypatch.setenv("RAY_worker_niceness", "15")  # Ray reads it itself, then
    assert local_worker_niceness() is None
