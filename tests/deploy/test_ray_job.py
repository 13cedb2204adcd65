"""A flow run of the Kubernetes work pool reaches a separate Ray cluster the way the pod does it: the Job that
prefect-kubernetes renders from deploy/k8s/prefect-work-pool.json and prefect.yaml's job variables (for a flow run
created on a real Prefect server, where the pool and the deployment are registered) is started here as a process
with the container's command, arguments and environment — only the cluster's service names are pointed at this
machine. It submits the flow run to a `ray start --head` process's job server (infra/ray_job.py); the flow's driver
runs there, inside the cluster, and the curation completes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_kubernetes.worker import KubernetesWorker

from estimator.backbones.tiny import save_tiny_backbone
from infra.services import BIN, free_port, prefect_server
from infra.stack import Service, stop, wait_port

ROOT = Path(__file__).resolve().parents[2]
START = 300  # seconds a service may take to answer on a loaded 2-core machine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def own_ports() -> list[str]:
    """Every port a head opens, free ones: Ray's defaults (52365, 10001, ...) may be taken by another Ray here."""
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")
    return [f"--{name}={free_port()}" for name in names]


@contextlib.contextmanager
def ray_head(log: Path) -> Iterator[str]:
    """`ray start --head` with its job server (the dashboard), on loopback; yields the job server's URL."""
    port, dashboard = free_port(), free_port()
    temp = tempfile.TemporaryDirectory(prefix="emt-rayjob-", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # one node, every socket on 127.0.0.1
           "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}  # the image's PATH starts with its venv
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             "--disable-usage-stats", f"--temp-dir={temp.name}", *own_ports()],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    head = Service(name="ray-head", pid=proc.pid, port=port, url="", health=None, log=str(log))
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_port(port, proc, log)
        deadline = time.monotonic() + START
        while True:  # the job server answers once the dashboard has started its modules
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/api/version", timeout=10):
                break
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        yield url
    finally:
        stop(head)
        temp.cleanup()


def curate_params(corpus, root: Path) -> dict:
    backbone = save_tiny_backbone("open_clip", str(root / "model"), seed=0)
    return {
        "pool": [s.model_dump(mode="json") for s in corpus.pool],
        "robot": [s.model_dump(mode="json") for s in corpus.robot],
        "backbone": backbone.model_dump(mode="json") | {"modality": "image"},
        "k": 5, "report_per_set": 0, "mlflow": {"enabled": False},
        "output_uri": str(root / "runs"), "run_name": "from-k8s-job",
        "ray": {"embed_actors": 1, "actor_cpus": 0.5, "read_cpus": 0.25, "prepare_cpus": 0.25},
    }


async def job_container(api: str, params: dict) -> tuple[dict, str]:
    """The container of the Job the Kubernetes worker would create for a new flow run of `curate`, and the run's id."""
    pools = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]
    template = json.loads((ROOT / "deploy" / "k8s" / "prefect-work-pool.json").read_text())
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $EMT_HOME }}"}}]
    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            pool = await client.create_work_pool(
                WorkPoolCreate(name=pools["kubernetes"]["name"], type="kubernetes", base_job_template=template))
            flow_id = await client.create_flow_from_name("curate")
            deployment_id = await client.create_deployment(  # the server validates the job variables here
                flow_id, "curate", entrypoint="flows/curate.py:curate", work_pool_name=pool.name,
                job_variables=pools["kubernetes"]["job_variables"], pull_steps=pull)
            run = await client.create_flow_run_from_deployment(deployment_id, parameters={"params": params})
            deployment = await client.read_deployment(deployment_id)
            config = await KubernetesWorker.job_configuration.resolve_for_flow_run(
                run, client=client, work_pool=pool, worker_name="test", deployment=deployment)
    return config.job_manifest["spec"]["template"]["spec"]["containers"][0], str(run.id)


def test_a_kubernetes_flow_run_is_a_ray_job_on_a_separate_head(local_corpus, tmp_path):
    params = curate_params(local_corpus, tmp_path)
    with prefect_server(tmp_path) as api, ray_head(tmp_path / "ray-head.log") as job_server:
        container, run_id = asyncio.run(job_container(api, params))
        env = {e["name"]: e["value"] for e in container["env"]}
        # What the cluster's DNS would resolve, pointed at this machine; what the image sets (EMT_HOME, the venv's
        # PATH). Nothing else of this process's environment goes in.
        env |= {"RAY_ADDRESS": job_server, "PREFECT_API_URL": api, "EMT_HOME": str(ROOT),
                "PREFECT_HOME": str(tmp_path / "prefect-home"), "PATH": f"{BIN}:/usr/bin:/bin",
                "HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        for name in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"):
            env.pop(name)
        done = subprocess.run([*container["command"], *container["args"]], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=1200)
        output = done.stdout[-4000:] + done.stderr[-2000:]
        assert done.returncode == 0, output
        from ray.job_submission import JobSubmissionClient

        [job] = [j for j in JobSubmissionClient(job_server).list_jobs() if run_id in (j.submission_id or "")]
        assert str(job.status.value) == "SUCCEEDED" and job.entrypoint == "prefect flow-run execute", output
    manifest = tmp_path / "runs" / "from-k8s-job" / "manifest.parquet"
    assert manifest.exists(), output
