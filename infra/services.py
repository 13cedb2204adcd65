"""Start the real Prefect and MLflow servers on loopback, for local stacks and for the tests that need them.

with prefect_server(home) as api_url: ...      # `prefect server start`, SQLite under ``home``
with mlflow_server(root) as tracking_uri: ...  # `mlflow server`, SQLite backend, artifacts under ``root``
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent  # the console scripts of this environment


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, log: Path, *, timeout: float = 300) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or the time runs out (seconds when
    the machine is idle; minutes on a busy 2-core machine, where a new database's migrations wait for a CPU)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become healthy; server log:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def _serve(cmd: list[str], health: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(health, process, log)
            yield
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextlib.contextmanager
def prefect_server(home: Path, port: int | None = None) -> Iterator[str]:
    """A Prefect API server with its database under ``home``; yields its API URL."""
    port = port or free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    with _serve(cmd, f"{api}/health", home / "prefect-server.log", env):
        yield api


@contextlib.contextmanager
def mlflow_server(root: Path, port: int | None = None, *, args: Sequence[str] = ()) -> Iterator[str]:
    """An MLflow tracking server (SQLite backend, proxied artifacts under ``root``), 2 processes; yields its URI.
    ``args`` are further ``mlflow server`` options (e.g. ``--allowed-hosts`` as deploy/compose.yaml gives it)."""
    port = port or free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        *args,
    ]
    uri = f"http://127.0.0.1:{port}"
    with _serve(cmd, f"{uri}/health", root / "mlflow-server.log", env):
        yield uri
