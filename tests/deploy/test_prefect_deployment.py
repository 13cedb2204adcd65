"""prefect.yaml as production runs it: a real `prefect server`, `prefect deploy`, a process worker, and a
`curate` run triggered by deployment name with parameters (as from the UI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from estimator.backbones.tiny import save_tiny_backbone
from infra.services import prefect_server

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture(scope="module")
def server_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real `prefect server`; yields the environment that points the CLI and the worker at it."""
    home = tmp_path_factory.mktemp("prefect-server")
    with prefect_server(home) as api_url:
        yield {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": api_url,
            "EMT_HOME": str(ROOT),
        }


def _prefect(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_deployment_runs_curate_on_a_worker(server_env, local_corpus, tmp_path):
    env = server_env
    _prefect(env, "work-pool", "create", "emt-process", "--type", "process")
    _prefect(env, "deploy", "--all")
    backbone = save_tiny_backbone("open_clip", str(tmp_path / "model"))
    params = {
        "params": {
            "pool": [s.model_dump() for s in local_corpus.pool],
            "robot": [s.model_dump() for s in local_corpus.robot],
            "backbone": backbone.model_dump(),
            "k": 5,
            "output_uri": str(tmp_path / "runs"),
            "run_name": "from-ui",
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
            "report_per_set": 50,
        }
    }
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "emt-process"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            out = _prefect(env, "deployment", "run", "curate/curate", "--params", json.dumps(params), "--watch")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert "Completed" in out
    run = tmp_path / "runs" / "from-ui"
    assert (run / "_SUCCESS").exists()
    manifest = pq.read_table(run / "manifest.parquet")
    assert manifest.num_rows == sum(local_corpus.counts[s.name] for s in local_corpus.pool)
    assert sum(manifest["selected"].to_pylist()) == 5
