"""A local Ray listens on loopback only: its GCS, raylet, agents, driver and workers, none on the machine's network;
and it needs nothing from, and writes nothing to, Ray's shared default temporary directory.

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

from flows.runtime import ray_default_temp

SCRIPT = """
import json, sys, psutil, ray
from flows.runtime import local_ray

@ray.remote(num_cpus=0.1)
class Echo:
    def pid(self):
        import os
        return os.getpid()

with local_ray(temp_dir=sys.argv[1], num_cpus=2):
    ray.get(Echo.remote().pid.remote())  # a worker is up and serving
    driver, listening = psutil.Process(), []
    for proc in [driver, *driver.children(recursive=True)]:
        try:
            listening += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
print(json.dumps(listening))
"""


def test_local_ray_listens_on_loopback_only(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    fresh = tmp_path / "tmp"  # the child's TMPDIR: Ray's default temporary directory would be fresh/ray
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "RAY_ADDRESS")} | {"TMPDIR": str(fresh)}
    with tempfile.TemporaryDirectory(prefix="emt-lo-", dir="/tmp") as ray_tmp:  # Ray's socket paths must be short
        done = subprocess.run([sys.executable, "-c", SCRIPT, ray_tmp], cwd=repo, capture_output=True, text=True,
                              timeout=540, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (fresh / "ray").exists(), "the local Ray wrote to Ray's shared default temporary directory"
    listening = [tuple(s) for s in json.loads(done.stdout.strip().splitlines()[-1])]
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
