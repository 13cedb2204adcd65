"""A robot data file quarantined at preflight does not fail the run later: the report reads the cache entries the
run's plan recorded (in the sidecar), never the sources' listing again."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.manifest import read_sidecar
from core.read import lerobot
from core.storage import read_bytes
from flows.curate import curate
from flows.params import CurateParams
from synth import generate_corpus
from tests.conftest import TINY

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]


def test_a_missing_robot_data_file_is_quarantined_and_the_run_completes(tiny_backbone, tmp_path):
    corpus = generate_corpus(str(tmp_path / "corpus"), TINY)
    robot = corpus.robot[0]
    missing = lerobot.data_files(lerobot.load_meta(robot.uri))[-1]
    Path(missing).unlink()  # the robot source keeps one readable data file
    params = CurateParams(
        pool=corpus.pool,
        robot=[robot],
        backbone=tiny_backbone,
        fraction=0.2,
        output_uri=str(tmp_path / "runs"),
        run_name="missing-robot-file",
        max_error_rate=0.5,
        ray={"embed_batch_size": 16},
        report_per_set=50,
        mlflow={"enabled": False},
    )
    assert not params.allow_empty_sources
    report = curate(params)
    assert read_bytes(f"{report.run_uri}/_SUCCESS") == b""
    assert report.quarantined == {"unreadable_shard": 1}
    sidecar = read_sidecar(report.manifest_uri)
    assert sidecar["quarantined"] == {"unreadable_shard": 1} and Path(report.run_uri, "report.html").exists()
