"""deploy/compose.yaml's services run as it configures them, where they can run here: its MLflow server options (from
the compose validator's resolved file) on a real `mlflow server`, asked with the Host header the flows send inside
the compose network (`mlflow:5000`) — MLflow refuses a Host it was not told to allow."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request

import pytest
import yaml

from infra.services import mlflow_server
from tests.deploy.test_manifests import DEPLOY, _compose

pytestmark = pytest.mark.slow  # a real MLflow server


def _status(uri: str, host: str) -> int:
    # An API path: MLflow checks the Host of every request but /health and /version.
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_compose_mlflow_answers_the_flows_by_their_service_name(tmp_path):
    done = subprocess.run(
        [*_compose(), "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / "compose.env.example"), "config"],
        capture_output=True, text=True, cwd=DEPLOY, check=True,
    )
    command = yaml.safe_load(done.stdout)["services"]["mlflow"]["command"]
    security = [arg for arg in command if arg.startswith(("--allowed-hosts", "--cors-allowed-origins"))]
    assert security, "compose's MLflow sets no --allowed-hosts: it answers 403 to Host: mlflow:5000"
    with mlflow_server(tmp_path, args=security) as uri:
        assert _status(uri, "mlflow:5000") == 200  # a flow in the compose network
        assert _status(uri, "127.0.0.1:5000") == 200  # a browser on the host, through the published port
        assert _status(uri, "elsewhere.example:5000") == 403  # the check is still on for other names
