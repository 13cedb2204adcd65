"""One local stack (``emt stack up``: S3, Prefect server + worker, MLflow, Ray head, the deployments of prefect.yaml
and the demo data) for every test of this folder, on free loopback ports; torn down at the end, where the teardown
checks that no process of it and none of its ports is left."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID, uuid4

import psutil
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun

from core.settings import StorageConfig
from infra import stack
from infra.services import free_port
from infra.stack_setup import storage


@dataclass
class Stack:
    config: stack.StackConfig
    services: dict[str, stack.Service]
    env: dict[str, str]
    storage: StorageConfig
    seconds: float

    @staticmethod
    def defaults(name: str) -> dict:
        """A deployment's default parameters as prefect.yaml gives them (what the UI's form starts from)."""
        spec = yaml.safe_load((stack.ROOT / "prefect.yaml").read_text())
        return next(d for d in spec["deployments"] if d["name"] == name)["parameters"]

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.env["PREFECT_API_URL"])

    def run_deployment(self, name: str, parameters: dict, *, timeout: float = 900) -> FlowRun:
        """Create a flow run of deployment ``name`` as the UI's "Custom run" does, and wait for a final state."""
        with self.client() as client:
            deployment = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
            return self.wait(run.id, timeout=timeout)

    def wait(self, flow_run_id: UUID, *, timeout: float = 900) -> FlowRun:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                run = client.read_flow_run(flow_run_id)
                if run.state and run.state.is_final():
                    return run
                assert time.monotonic() < deadline, f"flow run {run.name} still {run.state_name} after {timeout} s"
                time.sleep(3)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = {f"{name}_port": free_port() for name in ("s3", "prefect", "mlflow", "ray", "worker")}
    config = stack.StackConfig(  # a planted S3 secret: test_secrets.py looks for it in all a run writes
        root=str(tmp_path_factory.mktemp("stk")), ray_cpus=2, demo_samples_per_source=20,
        s3_secret=f"planted-{uuid4().hex}", **ports,
    )
    start = time.monotonic()
    try:
        services = stack.up(config)
        yield Stack(config, services, stack.env(config), storage(config), time.monotonic() - start)
    finally:
        started = stack.read_state(config)
        procs = [p for s in started.values() for p in _tree(s.pid)]
        stack.down(config)
    left = [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"stack processes left after down: {left}"
    assert not any(stack.port_open(s.port) for s in started.values()), "a stack port is still open after down"
