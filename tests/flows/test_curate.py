"""The curate flow end to end: real ephemeral Prefect API, real local Ray, corpus and outputs on the S3 server."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pytest
import yaml

from core.contracts import MANIFEST
from core.manifest import iter_selected, read_manifest, read_sidecar
from core.settings import ConfigError, parse_config
from core.storage import filesystem, read_bytes
from estimator.backbones.backbone import BackboneSpec
from estimator.backbones.tiny import save_tiny_backbone
from estimator.scorer import ScorerConfig
from flows.curate import curate
from flows.params import CurateParams

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]


@pytest.fixture(scope="session")
def s3_backbone(s3):
    bucket = s3.make_bucket("models")
    return save_tiny_backbone("open_clip", f"{bucket}/tiny-open_clip", s3.storage, seed=0)


@pytest.fixture(scope="session")
def s3_params(s3, s3_corpus, s3_backbone) -> CurateParams:
    out = s3.make_bucket("runs")
    return CurateParams(
        pool=s3_corpus.pool,
        robot=s3_corpus.robot,
        storage=s3.storage,
        backbone=s3_backbone,
        k=20,
        output_uri=f"{out}/curate",
        ray={"embed_batch_size": 16},
    )


@pytest.fixture(scope="session")
def first_run(s3_params):
    return curate(s3_params.model_copy(update={"run_name": "first"}))


def test_end_to_end_on_s3(first_run, s3, s3_corpus):
    manifest = read_manifest(first_run.manifest_uri, s3.storage)
    assert manifest.schema.remove_metadata().equals(MANIFEST.remove_metadata())
    assert manifest.num_rows == sum(s3_corpus.counts[s.name] for s in s3_corpus.pool)
    assert pc.sum(manifest["selected"]).as_py() == 20 == first_run.selected
    tar = pc.match_substring(manifest["shard_uri"], ".tar")  # where each sample is: reader -> cache -> manifest
    assert manifest.filter(tar)["byte_length"].null_count == 0 and pc.any(tar).as_py()
    assert manifest.filter(pc.invert(tar))["row_group"].null_count == 0
    assert sorted(manifest["rank"].to_pylist()) == list(range(manifest.num_rows))
    top = manifest.filter(manifest["selected"])
    assert pc.min(top["score"]).as_py() >= pc.max(manifest.filter(pc.invert(manifest["selected"]))["score"]).as_py()
    sidecar = read_sidecar(first_run.manifest_uri, s3.storage)
    assert sidecar["k"] == 20 and sidecar["rows"] == manifest.num_rows and len(sidecar["content_sha256"]) == 64
    assert read_bytes(f"{first_run.run_uri}/_SUCCESS", s3.storage) == b""
    assert first_run.shards_embedded > 0 and first_run.quarantined == {}


def test_selected_samples_stream_back_from_their_shards(first_run, s3):
    batches = list(iter_selected(first_run.manifest_uri, s3.storage))
    samples = pd.concat([b.to_pandas() for b in batches])
    assert len(samples) == 20 and samples["image"].map(len).min() > 0 and samples["text"].str.len().min() > 0
    chosen = read_manifest(first_run.manifest_uri, s3.storage, selected_only=True).to_pandas()
    assert set(samples["sample_id"]) == set(chosen["sample_id"])


def test_second_run_hits_the_cache(first_run, s3_params, s3):
    second = curate(s3_params.model_copy(update={"run_name": "second"}))
    assert second.shards_embedded == 0 and second.shards_cached == first_run.shards_embedded
    first_sidecar = read_sidecar(first_run.manifest_uri, s3.storage)
    assert read_sidecar(second.manifest_uri, s3.storage)["content_sha256"] == first_sidecar["content_sha256"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"k": 10_000}, "larger than the pool"),
        ({"backbone": BackboneSpec(kind="open_clip", model="No-Such-ViT")}, "No-Such-ViT"),
    ],
)
def test_bad_input_rejected(s3_params, change, message, first_run):
    with pytest.raises(ValueError, match=message):
        curate(s3_params.model_copy(update={"run_name": "bad", **change}))


def test_empty_robot_set_rejected(s3_params, tmp_path):
    empty = s3_params.robot[0].model_copy(update={"uri": str(tmp_path / "nothing")})
    with pytest.raises(ValueError, match=r"robot\.0\.uri: no readable shard at .*nothing"):
        curate(s3_params.model_copy(update={"robot": [empty], "run_name": "empty"}))


def test_estimator_from_another_backbone_rejected(first_run, s3_params, s3):
    other = save_tiny_backbone("open_clip", "s3://models/tiny-open_clip-seed1", s3.storage, seed=1)
    params = s3_params.model_copy(
        update={
            "backbone": other,
            "run_name": "mismatch",
            "scorer": ScorerConfig(estimator_uri=f"{first_run.run_uri}/estimator"),
        }
    )
    with pytest.raises(ValueError, match="trained on backbone"):
        curate(params)


def test_params_reject_bad_configuration():
    with pytest.raises(ConfigError, match="give k or fraction"):
        parse_config(
            CurateParams,
            {
                "pool": [{"name": "a", "format": "parquet", "uri": "/x"}],
                "robot": [{"name": "r", "format": "lerobot", "uri": "/y"}],
                "backbone": {"kind": "open_clip", "model": "ViT-B-32"},
                "output_uri": "/o",
            },
        )
    with pytest.raises(ConfigError, match="robot"):
        parse_config(
            CurateParams,
            {
                "pool": [{"name": "a", "format": "parquet", "uri": "/x"}],
                "robot": [],
                "backbone": {"kind": "open_clip", "model": "ViT-B-32"},
                "k": 1,
                "output_uri": "/o",
            },
        )


def test_corrupt_input_is_quarantined_and_counted(local_corpus, tmp_path, s3_backbone, s3):
    pool = [s.model_copy(update={"uri": str(tmp_path / s.name)}) for s in local_corpus.pool]
    for src, dst in zip(local_corpus.pool, pool, strict=True):
        shutil.copytree(src.uri, dst.uri)
    broken = sorted(Path(pool[0].uri).glob("*.tar"))[0]
    broken.write_bytes(broken.read_bytes()[:3000])  # a truncated tar: its tail is lost, and recorded
    (Path(pool[2].uri) / "zz-not-parquet.parquet").write_bytes(b"garbage")
    params = CurateParams(
        pool=pool,
        robot=local_corpus.robot,
        storage=s3.storage,
        backbone=s3_backbone,
        k=5,
        output_uri=str(tmp_path / "runs"),
        run_name="corrupt",
        # The unreadable shard counts the samples it held (about one shard of this tiny pool's ~137): ~11%.
        max_error_rate=0.25,
    )
    report = curate(params)
    assert report.quarantined == {"corrupt_tar": 1, "unreadable_shard": 1}
    errors = pd.read_parquet(tmp_path / "runs" / "corrupt" / "errors.parquet")
    assert sorted(errors["reason"]) == ["corrupt_tar", "unreadable_shard"]
    assert set(errors["stage"]) == {"read"}

    with pytest.raises(ValueError, match="max_error_rate"):
        curate(params.model_copy(update={"run_name": "strict", "max_error_rate": 0.0}))


def test_run_is_recorded_in_mlflow(first_run, mlflow_store):
    import mlflow

    run = mlflow.MlflowClient(mlflow_store).get_run(first_run.mlflow_run_id)
    assert run.data.tags["manifest_uri"] == first_run.manifest_uri
    assert run.data.metrics["selected"] == 20 and run.data.params["scorer"] == "estimator"
    artifacts = {a.path for a in mlflow.MlflowClient(mlflow_store).list_artifacts(first_run.mlflow_run_id)}
    assert {"manifest.json", "params.json"} <= artifacts


def test_finished_run_is_not_redone(first_run, s3_params, s3):
    again = curate(s3_params.model_copy(update={"run_name": "first"}))
    assert again == first_run  # the stored report, not a new run
    assert read_bytes(f"{first_run.run_uri}/_SUCCESS", s3.storage) == b""


def test_emt_report_rebuilds_a_runs_report(first_run, s3, tmp_path, capsys):
    from flows.cli import main

    config = tmp_path / "storage.yaml"
    config.write_text(
        yaml.safe_dump({"storage": {"endpoint_url": s3.storage.endpoint_url, "key": "embedded", "secret": "embedded"}})
    )
    html_uri = f"{first_run.run_uri}/report.html"
    fs, path = filesystem(html_uri, s3.storage)
    fs.rm(path)
    assert main(["report", first_run.manifest_uri, "--config", str(config), "--per-set", "50"]) == 0
    assert html_uri in capsys.readouterr().out
    assert b"data:image/png;base64," in read_bytes(html_uri, s3.storage)


def test_worker_stats_are_written_beside_the_run_and_recorded(first_run, s3, mlflow_store):
    import json

    import mlflow

    stats = json.loads(read_bytes(f"{first_run.run_uri}/stats.json", s3.storage))
    assert len(stats["shards"]) == first_run.shards_embedded  # one summary row per shard a worker embedded
    assert sum(r["rows_embedded"] for r in stats["shards"]) == stats["embedding"]["rows_embedded"] > 0
    assert first_run.embedding["samples_per_s"] > 0 and first_run.embedding["seconds_embed"] > 0
    metrics = mlflow.MlflowClient(mlflow_store).get_run(first_run.mlflow_run_id).data.metrics
    assert metrics["embed_samples_per_s"] > 0 and metrics["embed_seconds_read"] >= 0
    # every step's wall time, recorded by the product: the executor's jobs and the steps that are none
    steps = ["embed_s", "fit_s", "score_s", "select_s", "manifest_s", "report_s"]
    assert list(first_run.timings) == steps and all(first_run.timings[s] > 0 for s in steps)
    assert metrics["timing_embed_s"] == first_run.timings["embed_s"]
    report = read_bytes(first_run.report_uri, s3.storage).decode()
    assert "Embedding" in report and "samples_per_s" in report


def test_each_step_shows_progress_and_ray_data_stays_quiet(local_corpus, s3_backbone, s3, tmp_path, capfd, caplog):
    params = CurateParams(
        pool=local_corpus.pool[:2],
        robot=local_corpus.robot,
        storage=s3.storage,
        backbone=s3_backbone,
        k=5,
        output_uri=str(tmp_path / "runs"),  # a fresh cache: this run embeds
        run_name="progress",
        report_per_set=10,
    )
    curate(params)
    out = "".join(capfd.readouterr())
    # scoring and writing the manifest are passes of the selection engine: they count its tasks
    for step, unit in (("embed", "shards"), ("fit", "steps"), ("score", "tasks"), ("rank (score)", "tasks"),
                       ("write manifest", "tasks"), ("report", "steps")):
        name = re.escape(step)
        assert re.search(rf"{name}: 0/(\d+) {unit}\b.*{name}: \1/\1 {unit}, .*in \d:\d\d:\d\d", out, re.S), step
    assert re.search(r"embed: \d+/\d+ shards, \d+ samples/s", out)
    # The UI's bar follows the same feed as the lines: the embedding job's end moves it, with the job's own line
    assert re.search(r"run progress: embed: (\d+)/\1 shards, \d+ samples/s, in \d:\d\d:\d\d", caplog.text)
    # The report's steps move the run's progress bar in the UI, each with a line in the run's log naming it.
    for n, name in enumerate(("reading the sampled sets", "MMD and diversity", "figures and the 2-D map"), 1):
        assert f"run progress: report, {name} ({n}/5)" in caplog.text, name
    # Ray Data's block counters and banners, and Ray's actor-restart alarm, say nothing a user can act on
    for noise in ("Total Progress", "Queued blocks", "Starting execution of Dataset", "max_restarts"):
        assert noise not in out


def test_fit_and_report_compute_on_the_step_cpus(first_run, s3_params, monkeypatch):
    """By default the fit and the report run on 1 thread in every pool (torch, BLAS, OpenMP), whatever the process
    had, and the process gets its setting back (unpinned, they collapsed on a busy host)."""
    import torch
    from threadpoolctl import threadpool_info

    from tasks import prefect_tasks

    seen = {}

    def recording(task, name):
        def call(*args, **kwargs):
            seen[name] = torch.get_num_threads(), {p["num_threads"] for p in threadpool_info()}
            return task.fn(*args, **kwargs)
        return call

    monkeypatch.setattr(prefect_tasks, "fit_task", recording(prefect_tasks.fit_task, "fit"))
    monkeypatch.setattr(prefect_tasks, "report_task", recording(prefect_tasks.report_task, "report"))
    torch.set_num_threads(2)
    curate(s3_params.model_copy(update={"run_name": "pinned"}))  # embeds nothing: the first run's cache
    assert seen == {"fit": (1, {1}), "report": (1, {1})}
    assert torch.get_num_threads() == 2


def test_only_a_local_pool_of_one_manifest_file_is_selected_in_process(s3_params, monkeypatch):
    from flows.curate import selects_in_process

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    one_file = s3_params.ray.shards_per_manifest_file
    assert selects_in_process(s3_params, pool_shards=one_file)
    assert not selects_in_process(s3_params, pool_shards=one_file + 1)  # more files: Ray tasks in parallel
    on_cluster = s3_params.model_copy(update={"ray": s3_params.ray.model_copy(update={"address": "ray://head:10001"})})
    assert not selects_in_process(on_cluster, pool_shards=1)
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert not selects_in_process(s3_params, pool_shards=1)
