"""A local Ray listens on loopback only: its GCS, raylet, agents, driver and workers, none on the machine's network."""

from __future__ import annotations

import ipaddress
import os

import psutil
import pytest
import ray


@ray.remote(num_cpus=0.1)
class _Echo:
    def pid(self) -> int:
        return os.getpid()


@pytest.mark.usefixtures("ray_local")  # started by flows.runtime.local_ray, as ray_session starts a local Ray
def test_local_ray_listens_on_loopback_only():
    actor = _Echo.remote()
    ray.get(actor.pid.remote())  # a worker is up and serving
    driver = psutil.Process()
    listening = []
    for proc in [driver, *driver.children(recursive=True)]:
        try:
            listening += [
                (proc.name(), c.laddr.ip, c.laddr.port)
                for c in proc.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.NoSuchProcess:
            continue
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), listening
    exposed = [s for s in listening if not ipaddress.ip_address(s[1].removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
    ray.kill(actor)
