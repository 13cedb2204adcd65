"""`curate` on Ray clusters the documented way — its driver joins the cluster through RAY_ADDRESS (no Ray Client):
a head started as its own process (`ray start --head`) and a two-node cluster on this machine
(`ray.cluster_utils.Cluster`); each manifest is identical to the one of a local Ray run.

Each run is `emt curate` in its own process: the environment alone points it at a cluster, as on a worker."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from estimator.backbones.tiny import save_tiny_backbone
from infra.services import BIN, free_port
from infra.stack import Service, port_open, stop, wait_port

# Three curation runs, each its own process and Ray cluster.
pytestmark = pytest.mark.timeout(1200)

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def config(local_corpus, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ray-curate")
    backbone = save_tiny_backbone("open_clip", str(root / "model"), seed=0)
    return {
        "pool": [s.model_dump() for s in local_corpus.pool],
        "robot": [s.model_dump() for s in local_corpus.robot],
        "backbone": backbone.model_dump() | {"modality": "image"},
        "k": 5,
        "report_per_set": 0,
        "mlflow": {"enabled": False},
        "ray": {"embed_actors": 1, "actor_cpus": 0.5, "read_cpus": 0.5},
    }


def curate(config: dict, out: Path, env: dict[str, str]) -> str:
    """Run `emt curate` with its own output and cache (so every run embeds); return the manifest path."""
    path = out / "curate.yaml"
    out.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config | {"output_uri": str(out / "runs"), "run_name": "r"}))
    done = subprocess.run(
        [str(BIN / "emt"), "curate", "--config", str(path)],
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **RAY_ENV,
             "PREFECT_HOME": str(out / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env},
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return str(out / "runs" / "r" / "manifest.parquet")


def same_manifest(a: str, b: str) -> None:
    cols = ["sample_id", "source", "key", "score", "rank", "selected"]
    left, right = (pq.read_table(p, columns=cols).sort_by("sample_id") for p in (a, b))
    assert left.equals(right)


@pytest.fixture(scope="module")
def local_manifest(config, tmp_path_factory) -> str:
    env = {"EMT_RAY_TMPDIR": str(tmp_path_factory.mktemp("ray-local"))}
    return curate(config, tmp_path_factory.mktemp("local") / "o", env)


def test_curate_on_a_separate_ray_head(config, local_manifest, tmp_path):
    port, log = free_port(), tmp_path / "ray-head.log"
    temp = tempfile.TemporaryDirectory(prefix="emt-ray-", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp.name}"],
        env={**os.environ, **RAY_ENV}, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_port(port, head, log)
        manifest = curate(config, tmp_path / "o", {"RAY_ADDRESS": f"127.0.0.1:{port}"})
    finally:
        stop(Service(name="ray-head", pid=head.pid, port=port, url="", health=None, log=""))
        temp.cleanup()
    assert not port_open(port)
    same_manifest(manifest, local_manifest)


def test_curate_on_a_two_node_cluster(config, local_manifest, tmp_path):
    from ray.cluster_utils import Cluster

    os.environ.update(RAY_ENV)
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=node)
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        manifest = curate(config, tmp_path / "o", {"RAY_ADDRESS": cluster.address})
    finally:
        cluster.shutdown()
    same_manifest(manifest, local_manifest)
