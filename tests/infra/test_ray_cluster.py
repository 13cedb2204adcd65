"""`curate` on Ray clusters the documented way — its driver joins the cluster through RAY_ADDRESS (no Ray Client):
a head started as its own process (`ray start --head`) and a two-node cluster on this machine
(a second `ray start --address` process joining it); each manifest is identical to the one of a local Ray run.

Each run is `emt curate` in its own process: the environment alone points it at a cluster, as on a worker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from estimator.backbones.tiny import save_tiny_backbone
from infra.services import BIN, free_port
from infra.stack import Service, port_open, stop, wait_port

# Three curation runs, each its own process and Ray cluster.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

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
        "ray": {"embed_actors": 1, "actor_cpus": 0.5, "read_cpus": 0.25, "prepare_cpus": 0.25},
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


@contextlib.contextmanager
def ray_nodes(tmp_path: Path, cpus: list[int]) -> Iterator[str]:
    """A head (`ray start --head`) and one worker node per further entry of ``cpus`` (`ray start --address`), each
    its own process on loopback; yields the cluster's address and stops every node, leaving no port."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.TemporaryDirectory(prefix="emt-ray-", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    common = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp.name}"]
    nodes: list[Service] = []
    try:
        for i, n in enumerate(cpus):
            role = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address={address}"]
            log = tmp_path / f"ray-node-{i}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen([str(BIN / "ray"), "start", *role, f"--num-cpus={n}", *common],
                                        env={**os.environ, **RAY_ENV}, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            nodes.append(Service(name=f"ray-{i}", pid=proc.pid, port=port, url="", health=None, log=str(log)))
            if i == 0:
                wait_port(port, proc, log)
            else:
                _wait_started(log)
        yield address
    finally:
        for node in reversed(nodes):
            stop(node)
        temp.cleanup()
    assert not port_open(port)


def _wait_started(log: Path, timeout: float = 300) -> None:
    """`ray start` says so once its node has registered with the head."""
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        assert time.monotonic() < deadline, f"the Ray node did not start; log:\n{log.read_text()[-2000:]}"
        time.sleep(1)


def test_curate_on_a_separate_ray_head(config, local_manifest, tmp_path):
    with ray_nodes(tmp_path, [1]) as address:
        manifest = curate(config, tmp_path / "o", {"RAY_ADDRESS": address})
    same_manifest(manifest, local_manifest)


def test_curate_on_a_two_node_cluster(config, local_manifest, tmp_path):
    with ray_nodes(tmp_path, [1, 1]) as address:
        manifest = curate(config, tmp_path / "o", {"RAY_ADDRESS": address})
    same_manifest(manifest, local_manifest)
