"""`emt stack up` that cannot start says so in one line and leaves nothing running; `down` is quick.

A taken port is refused before anything starts, naming the option that moves it; a service that fails to start
stops what the same `up` had started; the Ray head stops in seconds, not after Ray's 30 s drain."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import stack
from infra.services import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def config() -> Iterator[stack.StackConfig]:
    ports = {f"{name}_port": free_port() for name in ("s3", "prefect", "mlflow", "ray", "worker")}
    root = tempfile.TemporaryDirectory(prefix="emt-stk-", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    yield stack.StackConfig(root=root.name, ray_cpus=1, deploy=False, **ports)
    stack.down(stack.StackConfig(root=root.name))  # whatever a failed test left
    root.cleanup()


def test_a_taken_port_is_one_line_naming_a_real_option_and_starts_nothing(config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", config.prefect_port))
        taken.listen()
        args = [f"--{k.replace('_', '-')}={v}" for k, v in config.model_dump(exclude={"s3_secret"}).items()]
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "flows.cli", "stack", "up", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - start
    assert done.returncode == 2 and seconds < 10, (seconds, done.stderr)
    assert done.stderr.splitlines() == [f"emt stack: prefect-server: port {config.prefect_port} on 127.0.0.1 is "
                                        "taken; choose another with --prefect-port"], done.stderr
    assert "--prefect-port" in subprocess.run([sys.executable, "-m", "flows.cli", "stack", "--help"], cwd=ROOT,
                                              capture_output=True, text=True).stdout  # the option exists
    assert stack.read_state(config) == {} and not stack.port_open(config.s3_port)


def test_a_service_that_fails_to_start_stops_what_up_started(config, monkeypatch):
    real = stack.start_service

    def start(name: str, cfg: stack.StackConfig) -> stack.Service:
        if name == "prefect-server":
            raise RuntimeError(f"{name}: http://127.0.0.1:{cfg.prefect_port}/api/health did not become healthy; "
                               "server log:\n...")
        return real(name, cfg)

    monkeypatch.setattr(stack, "start_service", start)
    with pytest.raises(stack.StackStartError) as failed:
        stack.up(config)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("starting prefect-server failed: prefect-server: http://")
    assert message.endswith("stopped what this `up` had started: s3")
    assert stack.read_state(config) == {} and not stack.port_open(config.s3_port)


def test_down_stops_the_ray_head_in_seconds(config):
    for sub in ("ray", "logs"):
        (config.home / sub).mkdir(parents=True, exist_ok=True)
    head = stack.start_service("ray-head", config)
    start = time.monotonic()
    stack.stop(head)
    assert time.monotonic() - start < 10  # was 31 s: Ray's SIGTERM drain
    assert not stack.alive(head) and not stack.port_open(config.ray_port)
