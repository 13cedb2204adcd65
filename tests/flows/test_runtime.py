"""A local Ray listens on loopback only: its GCS, raylet, agents, driver and workers, none on the machine's network.

Checked in a fresh process, as ``emt curate`` starts one: the test session's own Ray has been through other tests
(Ray Data's helper actors, Ray Train) whose sockets this test is not about."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import tempfile
from pathlib import Path

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


def test_local_ray_listens_on_loopback_only():
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="emt-lo-", dir="/tmp") as ray_tmp:  # Ray's socket paths must be short
        done = subprocess.run([sys.executable, "-c", SCRIPT, ray_tmp], cwd=repo, capture_output=True, text=True,
                              timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    listening = [tuple(s) for s in json.loads(done.stdout.strip().splitlines()[-1])]
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), listening
    exposed = [s for s in listening if not ipaddress.ip_address(s[1].removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
