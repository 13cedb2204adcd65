"""Every work pool of prefect.yaml, checked by Prefect's own code rather than by reading: its job variables against the
pool's base job template with the Prefect server's validation (what `prefect deploy` and a flow run's creation run),
then the worker's job configuration built from them as the worker builds it (the process worker, prefect-docker,
prefect-kubernetes), the Kubernetes Job it renders checked by kubernetes-validate."""

from __future__ import annotations

import asyncio
import copy
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import kubernetes_validate
import pytest
import yaml
from fastapi import HTTPException
from prefect.client.schemas.objects import FlowRun
from prefect.server.api.validation import (
    validate_job_variable_defaults_for_work_pool,
    validate_job_variables_for_deployment,
    validate_job_variables_for_deployment_flow_run,
)
from prefect.server.schemas.actions import DeploymentCreate, DeploymentFlowRunCreate
from prefect.server.schemas.core import WorkPool
from prefect.workers.process import ProcessWorker
from prefect_docker.worker import DockerWorker
from prefect_kubernetes.worker import KubernetesWorker

ROOT = Path(__file__).resolve().parents[2]
K8S = "1.33.0"  # the oldest Kubernetes this project supports (as test_manifests.py)
WORKERS = {"process": ProcessWorker, "docker": DockerWorker, "kubernetes": KubernetesWorker}


def pools() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]


def base_job_template(kind: str) -> dict:
    """The pool's base job template: the product's own for Kubernetes, the worker's default for the others."""
    if kind == "kubernetes":
        return json.loads((ROOT / "deploy" / "k8s" / "prefect-work-pool.json").read_text())
    return WORKERS[kind].get_default_base_job_template()


def validate(kind: str, job_variables: dict) -> None:
    """Prefect server's checks, in the order they run: the pool's defaults when it is created, the deployment's
    variables when it is deployed, and all of them together (required ones too) when a flow run is created."""
    pool = WorkPool(name=pools()[kind]["name"], type=kind, base_job_template=base_job_template(kind))

    async def checks() -> None:
        await validate_job_variable_defaults_for_work_pool(None, pool.name, pool.base_job_template)
        deployment = DeploymentCreate(name="d", flow_id=uuid4(), work_pool_name=pool.name, job_variables=job_variables)
        await validate_job_variables_for_deployment(None, pool, deployment)
        stored = SimpleNamespace(id=uuid4(), job_variables=job_variables,
                                 work_queue=SimpleNamespace(work_pool=pool))  # the fields the check reads
        await validate_job_variables_for_deployment_flow_run(None, stored, DeploymentFlowRunCreate())

    asyncio.run(checks())


def job_configuration(kind: str, job_variables: dict):
    """The configuration the pool's worker builds for a flow run of a deployment with these variables (it asks the
    Prefect API for block and variable references: the tests that call it use the session's test API)."""
    config_class = WORKERS[kind].job_configuration
    config = asyncio.run(config_class.from_template_and_values(base_job_template(kind), job_variables))
    config.prepare_for_flow_run(FlowRun(id=uuid4(), flow_id=uuid4(), name="quick-run"))
    return config


@pytest.mark.parametrize("kind", list(WORKERS))
def test_every_pools_job_variables_pass_prefects_validation(kind):
    assert set(pools()) == set(WORKERS)
    validate(kind, pools()[kind].get("job_variables", {}))


def test_a_mistyped_job_variable_is_refused():
    """The validator is not a YAML parser: the Kubernetes pool's env given as a list, as a Job spells it, is refused."""
    variables = copy.deepcopy(pools()["kubernetes"]["job_variables"])
    variables["env"] = [{"name": "RAY_ADDRESS", "value": "http://emt-ray-head-svc.emt.svc:8265"}]
    with pytest.raises(HTTPException, match="env"):
        validate("kubernetes", variables)


def test_the_kubernetes_job_submits_the_flow_run_to_the_ray_cluster(prefect_api):
    config = job_configuration("kubernetes", pools()["kubernetes"]["job_variables"])
    job = config.job_manifest
    # prefect-kubernetes refuses a template without Job fields at pod level (`parallelism`, `completions`: its own
    # default template's slip), which the API server drops with a warning; everything else is checked strictly.
    strict = copy.deepcopy(job)
    assert {strict["spec"]["template"]["spec"].pop(k) for k in ("parallelism", "completions")} == {1}
    kubernetes_validate.validate(strict, K8S, strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    # The flow-run command, submitted as a Ray job to the head's job server (infra/ray_job.py).
    assert container["command"] + container["args"] == [
        "python", "-m", "infra.ray_job", "--", *shlex.split(config._base_flow_run_command())]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAY_ADDRESS"] == "http://emt-ray-head-svc.emt.svc:8265"
    assert "PREFECT__FLOW_RUN_ID" in env and env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
    assert not any("SECRET" in name or "PASSWORD" in name for name in env)  # credentials come from Secrets only
    assert {s["secretRef"]["name"] for s in container["envFrom"]} == {"emt-s3", "emt-mlflow"}


def test_the_docker_job_runs_on_compose_network_and_submits_to_the_ray_head(prefect_api):
    config = job_configuration("docker", pools()["docker"]["job_variables"])
    assert shlex.split(config.command)[:4] == ["python", "-m", "infra.ray_job", "--"]
    assert config.env["RAY_ADDRESS"] == "http://ray-head:8265"
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    names = {spec.get("name", key) for key, spec in compose["networks"].items()}
    assert set(config.networks) <= names, f"the pool's networks {config.networks}, compose creates {names}"
