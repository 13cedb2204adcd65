"""The local stack's Ray head listens on 127.0.0.1 only — its GCS, raylet, agents and workers (the README says every
service of the stack is on loopback, and Ray runs with auth disabled there) — and a driver given the stack's
environment reaches it. tests/deploy/test_stack.py checks every service of a whole stack the same way."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile

import psutil
import pytest

from infra import stack
from infra.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of the process tree ``pid``."""
    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return found


def on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_the_stack_ray_head_listens_on_loopback_only():
    ports = {f"{name}_port": free_port() for name in ("s3", "prefect", "mlflow", "ray", "worker")}
    root = tempfile.TemporaryDirectory(prefix="emt-stk-", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    config = stack.StackConfig(root=root.name, ray_cpus=1, deploy=False, **ports)
    for sub in ("ray", "logs"):
        (config.home / sub).mkdir(parents=True, exist_ok=True)
    head = stack.start_service("ray-head", config)
    try:
        # A driver with the environment `stack up` prints (and the worker's flow runs get) runs a task there; the
        # sockets are listed after it, so the head's agents and a worker process are up by then.
        driver = "import ray; ray.init(log_to_driver=False); print(ray.get(ray.remote(lambda: 6 * 7).remote()))"
        env = {**os.environ, **stack.env(config), "RAY_AUTH_MODE": "disabled"}
        done = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=300)
        assert done.stdout.strip().endswith("42"), done.stderr[-3000:]
        sockets = listening(head.pid)
        assert any(port == config.ray_port for _, _, port in sockets)
        exposed = [s for s in sockets if not on_loopback(s[1])]
        assert not exposed, f"the stack's Ray head listens beyond loopback: {exposed}"
    finally:
        stack.stop(head)
        root.cleanup()
