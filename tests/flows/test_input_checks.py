"""Inputs that only the data can fault — a pool URI with no shards, a missing model, a truncated manifest, a robot
set with one episode — are one line on stderr within seconds, before Prefect or Ray start, with no traceback: each
command runs as a user runs it (`emt ...` in its own process)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from estimator.backbones.tiny import save_tiny_backbone
from tests.training.conftest import make_manifest, write_robot_dataset
from training.vlm import save_tiny_vlm

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 10  # the bound on an idle machine; the imports take 3-6 s on 2 cores


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, local_corpus) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    manifest = make_manifest(str(root / "curated" / "manifest.parquet"), local_corpus, per_source=2)
    return {
        "root": root,
        "corpus": local_corpus,
        "backbone": save_tiny_backbone("open_clip", str(root / "backbone"), seed=0),
        "vlm": save_tiny_vlm(str(root / "vlm"), None, seed=0),
        "manifest": manifest,
        "one_episode": write_robot_dataset(str(root / "one_episode"), episodes=1),
    }


def _imports_s() -> float:
    """Seconds ``emt --help`` takes now: the same imports and start-up, no check (the machine's load moves both)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "--help"], cwd=ROOT, capture_output=True, timeout=300)
    return time.perf_counter() - start


def emt(tmp_path: Path, command: str, config: dict) -> tuple[subprocess.CompletedProcess, float]:
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", command, "--config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return done, time.perf_counter() - start


def one_line(done: subprocess.CompletedProcess, seconds: float, *expected: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr and done.stdout == "", done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    for text in expected:
        assert text in done.stderr
    if seconds >= SECONDS:  # a loaded machine slows the imports too: the check itself must still take seconds
        assert seconds < _imports_s() + SECONDS / 2, (seconds, done.stderr)


def curate_config(inputs: dict, tmp_path: Path) -> dict:
    corpus = inputs["corpus"]
    return {
        "pool": [s.model_dump(mode="json") for s in corpus.pool],
        "robot": [s.model_dump(mode="json") for s in corpus.robot],
        "backbone": inputs["backbone"].model_dump(mode="json"),
        "k": 5, "output_uri": str(tmp_path / "runs"), "mlflow": {"enabled": False},
    }


def training_config(inputs: dict, tmp_path: Path) -> dict:
    return {"model": inputs["vlm"], "output_uri": str(tmp_path / "train"),
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}


def test_a_pool_uri_with_no_shards(inputs, tmp_path):
    config = curate_config(inputs, tmp_path)
    (tmp_path / "empty").mkdir()
    config["pool"][1]["uri"] = str(tmp_path / "empty")
    one_line(*emt(tmp_path, "curate", config), "emt curate: pool.1.uri: no readable shard at")


def test_a_missing_backbone(inputs, tmp_path):
    config = curate_config(inputs, tmp_path)
    config["backbone"]["model"] = str(tmp_path / "no-model")
    one_line(*emt(tmp_path, "curate", config), "emt curate:", "no-model", "no such directory")


def test_a_missing_blocklist(inputs, tmp_path):
    config = curate_config(inputs, tmp_path)
    config["filters"] = {"blocklists": [{"name": "csam", "uri": str(tmp_path / "nope.txt"), "kind": "sha256"}]}
    one_line(*emt(tmp_path, "curate", config), "emt curate: filters.blocklists.0.uri: blocklist 'csam': no file at")


def test_a_malformed_blocklist(inputs, tmp_path):
    (tmp_path / "bad.txt").write_text("# digests\n" + "ab" * 32 + "\nnot-a-hash\n")
    config = curate_config(inputs, tmp_path)
    config["filters"] = {"blocklists": [{"name": "ok", "uri": str(tmp_path / "bad.txt"), "kind": "url"},
                                        {"name": "bad", "uri": str(tmp_path / "bad.txt"), "kind": "sha256"}]}
    one_line(*emt(tmp_path, "curate", config), "emt curate: filters.blocklists.1.uri: blocklist 'bad' line 3")


def test_a_truncated_manifest(inputs, tmp_path):
    curated = Path(inputs["manifest"]).parent
    for path in curated.iterdir():  # the sidecar as it was; the manifest cut in half
        (tmp_path / path.name).write_bytes(path.read_bytes())
    data = (curated / "manifest.parquet").read_bytes()
    (tmp_path / "manifest.parquet").write_bytes(data[: len(data) // 2])
    config = training_config(inputs, tmp_path) | {"manifest_uri": str(tmp_path / "manifest.parquet")}
    one_line(*emt(tmp_path, "midtrain", config), "emt midtrain: manifest_uri:", "Parquet")


def test_a_missing_model(inputs, tmp_path):
    config = training_config(inputs, tmp_path) | {"manifest_uri": inputs["manifest"], "model": str(tmp_path / "nope")}
    one_line(*emt(tmp_path, "midtrain", config), "emt midtrain: model: no saved model at")


def test_a_robot_dataset_with_one_episode(inputs, tmp_path):
    robot = {"sources": [inputs["one_episode"].model_dump(mode="json")]}
    one_line(*emt(tmp_path, "finetune", training_config(inputs, tmp_path) | {"robot": robot}),
             "emt finetune: robot.heldout_fraction 0.1 holds out 1 of 1 episodes")


def test_the_pipeline_checks_every_stage_before_it_starts(inputs, tmp_path):
    robot = {"sources": [inputs["one_episode"].model_dump(mode="json")]}
    stage = training_config(inputs, tmp_path)
    config = {"curate": curate_config(inputs, tmp_path), "midtrain": stage, "finetune": stage | {"robot": robot}}
    config["finetune"].pop("model")
    one_line(*emt(tmp_path, "pipeline", config), "emt pipeline: robot.heldout_fraction")
