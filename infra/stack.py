"""``emt stack up|down|status``: the whole product on one machine, on loopback — an S3-compatible server (moto),
a Prefect server with its UI, a Prefect worker for the ``emt-process`` pool, an MLflow tracking server (SQLite
backend, artifacts on the S3 server) and a Ray head node.

Each service is one process group started here, with its port, data directory and log file under the stack's root
(``.stack/`` by default) and its PID in ``ROOT/stack.json``; ``down`` ends exactly those process trees and waits
for their ports to close, so nothing is left behind. The flows reach the services through the environment alone
(``env`` is what ``up`` prints to export), the same way they reach production services.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from core.settings import ConfigError
from infra import stack_setup
from infra.services import BIN, free_port, wait_healthy
from infra.stack_config import MLFLOW_BUCKET, ROOT, WORK_POOL, StackConfig, env, service_env

START_TIMEOUT = 300  # seconds a service may take to answer: minutes, not seconds, on a busy 2-core machine
RAY_NICENESS = "RAY_worker_niceness"  # Ray's variable: the niceness its workers add to their raylet's


@dataclass
class Service:
    """One started process: what ``status`` and ``down`` need to find it again."""

    name: str
    pid: int
    port: int
    url: str
    health: str | None
    log: str


def _commands(config: StackConfig) -> dict[str, tuple[list[str], dict[str, str], int, str, str | None]]:
    """Per service: command, extra environment, port, URL to open, health URL (None = the port answers)."""
    home, e = config.home, env(config)
    s3_url, prefect_url, mlflow_url = e["AWS_ENDPOINT_URL"], e["PREFECT_API_URL"][:-4], e["MLFLOW_TRACKING_URI"]
    ray_ports = [
        f"--{name}={free_port()}"
        for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                     "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port",
                     "ray-client-server-port")
    ]
    return {
        # moto keeps objects in memory; its recorder appends every request to a file that ``up`` replays, so
        # buckets and objects outlive a restart.
        "s3": (
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(config.s3_port)],
            {"MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(home / "s3" / "recording.jsonl")},
            config.s3_port, s3_url, f"{s3_url}/moto-api/",
        ),
        "prefect-server": (
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(config.prefect_port)],
            {"PREFECT_UI_API_URL": e["PREFECT_API_URL"]},
            config.prefect_port, prefect_url, f"{e['PREFECT_API_URL']}/health",
        ),
        "mlflow": (
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(config.mlflow_port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
             "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts"],
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_S3_ENDPOINT_URL": s3_url},
            config.mlflow_port, mlflow_url, f"{mlflow_url}/health",
        ),
        "ray-head": (
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={config.ray_port}", f"--num-cpus={config.ray_cpus}", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={home / 'ray'}", *ray_ports],
            # On SIGTERM a head first drains for 30 s (for Ray Serve proxies of a multi-node cluster); a local
            # single node has nothing to drain, and `down` took those 30 s every time. Its workers run at the
            # stack's priority, as a flow's own local Ray's do (flows.runtime.local_worker_niceness).
            {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
             RAY_NICENESS: os.environ.get(RAY_NICENESS, "0")},
            config.ray_port, e["RAY_ADDRESS"], None,
        ),
        "prefect-worker": (
            [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
             "--with-healthcheck"],
            {"PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(config.worker_port)},
            config.worker_port, f"pool {WORK_POOL}", f"http://127.0.0.1:{config.worker_port}/health",
        ),
    }


def _state_file(config: StackConfig) -> Path:
    return config.home / "stack.json"


def read_state(config: StackConfig) -> dict[str, Service]:
    path = _state_file(config)
    if not path.exists():
        return {}
    return {name: Service(**s) for name, s in json.loads(path.read_text()).items()}


def _write_state(config: StackConfig, services: dict[str, Service]) -> None:
    _state_file(config).write_text(json.dumps({n: asdict(s) for n, s in services.items()}, indent=1))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, process: subprocess.Popen, log: Path, *, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"port {port} did not open; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def alive(service: Service) -> bool:
    """The process we started is still there (not a recycled PID: it must still be in its own session)."""
    try:
        proc = psutil.Process(service.pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and os.getsid(service.pid) == service.pid
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False


class StackStartError(RuntimeError):
    """``up`` could not start the stack; what it had started is stopped again. One line: the CLI prints it."""


# The StackConfig field (and so the `emt stack` option) that sets each service's port; in start-up order.
PORT_FIELDS = {"s3": "s3_port", "prefect-server": "prefect_port", "mlflow": "mlflow_port", "ray-head": "ray_port",
               "prefect-worker": "worker_port"}


def _taken(name: str, config: StackConfig) -> str | None:
    field = PORT_FIELDS[name]
    port = getattr(config, field)
    if not port_open(port):
        return None
    return f"{name}: port {port} on 127.0.0.1 is taken; choose another with --{field.replace('_', '-')}"


def start_service(name: str, config: StackConfig) -> Service:
    cmd, extra, port, url, health = _commands(config)[name]
    if taken := _taken(name, config):
        raise ConfigError(taken)
    log = config.home / "logs" / f"{name}.log"
    with open(log, "a") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            cmd, env={**service_env(config), **extra}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: ``down`` ends exactly this tree
        )
    service = Service(name=name, pid=process.pid, port=port, url=url, health=health, log=str(log))
    try:
        if health:
            wait_healthy(health, process, log, timeout=START_TIMEOUT)
        else:
            wait_port(port, process, log)
    except RuntimeError:
        stop(service)
        raise
    return service


def up(config: StackConfig) -> dict[str, Service]:
    """Start every service not already running (in dependency order), register the deployments and seed the demo
    data; return the services. Idempotent: a second ``up`` starts only what is missing."""
    home = config.home
    for sub in ("s3", "prefect", "mlflow", "ray", "logs"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    services = {n: s for n, s in read_state(config).items() if alive(s)}
    missing = [name for name in PORT_FIELDS if name not in services]
    # Every port first: a taken one is refused before anything starts, naming the option that moves it.
    if taken := [t for name in missing if (t := _taken(name, config))]:
        raise ConfigError("; ".join(taken))
    started: list[str] = []
    step = "starting"
    try:
        for name in missing:
            if name == "prefect-worker":  # the pool and the deployments exist before a worker polls for them
                step = "registering the deployments"
                stack_setup.register(config, deploy=config.deploy)
            step = f"starting {name}"
            services[name] = start_service(name, config)
            started.append(name)
            _write_state(config, services)
            if name == "s3":  # restore earlier sessions' objects; the MLflow artifact bucket before MLflow starts
                step = "preparing the S3 buckets"
                stack_setup.prepare_s3(config)
        if config.deploy:
            step = "seeding the demo data"
            stack_setup.seed_demo(config)
    except Exception as err:
        # Nothing of a failed ``up`` stays running: what this call started is stopped (what ran before stays).
        for name in reversed(started):
            stop(services.pop(name))
        _write_state(config, services)
        if isinstance(err, ConfigError):
            raise
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise StackStartError(f"{step} failed: {first} (logs: {home / 'logs'}); stopped what this `up` had "
                              f"started: {', '.join(reversed(started)) or 'nothing'}") from err
    return services


def stop(service: Service, *, timeout: float = 30) -> None:
    """End the service's whole process tree (SIGTERM, then SIGKILL) and wait until its port is closed.

    The root process is asked first: a `ray start --block` then ends its node's processes in order in about a second,
    where signalling the whole tree at once left it waiting 15-30 s on processes already going. What the root leaves
    (a server's workers it does not end itself) is signalled after it."""
    try:
        root = psutil.Process(service.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(psutil.NoSuchProcess):
        if procs:
            procs[0].send_signal(signal.SIGTERM)
    psutil.wait_procs(procs[:1], timeout=min(10.0, timeout))
    for proc in procs[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, left = psutil.wait_procs(procs, timeout=timeout)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(left, timeout=10)
    deadline = time.monotonic() + timeout
    while port_open(service.port) and time.monotonic() < deadline:
        time.sleep(0.2)


def down(config: StackConfig) -> list[str]:
    """Stop every service of the stack (the worker first, S3 last); return their names."""
    services = read_state(config)
    for name in reversed(list(services)):
        stop(services[name])
    _state_file(config).unlink(missing_ok=True)
    return list(reversed(list(services)))


def rss_mib(service: Service) -> float:
    """Resident memory of the service's process tree, MiB."""
    try:
        root = psutil.Process(service.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def status(config: StackConfig) -> list[dict[str, object]]:
    """One row per service of the stack: running or not, its URL, port, memory and log."""
    return [
        {
            "service": s.name,
            "running": alive(s),
            "port_open": port_open(s.port),
            "url": s.url,
            "rss_mib": round(rss_mib(s)),
            "log": s.log,
        }
        for s in read_state(config).values()
    ]


def describe(config: StackConfig, services: dict[str, Service]) -> str:
    """What ``up`` prints: the URLs to open, the environment to export, where the logs are."""
    lines = ["", "open:"]
    lines += [f"  {s.name:15} {s.url}" for s in services.values()]
    lines += ["", "export (the CLI, the flows and the Ray driver read only these):"]
    lines += [f"  export {k}={v}" for k, v in env(config).items()]
    lines += ["", f"logs: {config.home / 'logs'}; stop with `emt stack down --root {config.root}`"]
    return "\n".join(lines)
