"""The ``ablation`` flow on the tiny corpus (3 arms x 2 seeds, a few steps each): every run is a child of one parent
run, the arms got the same budget (read back from MLflow), the random arm trained on a seeded uniform draw and the
curated arm on the manifest's selection, the result is readable through the MLflow client and beside the runs,
and a finished ablation is not redone. The same ablation with its units as Ray tasks on a local Ray gives the same
numbers, run by run, with units side by side; a unit that fails fails the flow naming its arm and seed."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from core.manifest import read_manifest, read_sidecar
from core.storage import publish_bytes, read_bytes
from flows.ablation import ablation
from flows.ablation_params import AblationParams
from flows.ablation_units import UnitFailed
from tests.training.conftest import make_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

TINY = {"batch_size": 4, "log_every": 1, "shuffle_buffer": 16, "lr": 1e-3}


@pytest.fixture(scope="module")
def done(local_corpus, tiny_vlm_dir, tmp_path_factory, mlflow_store):
    out = tmp_path_factory.mktemp("ablation")
    manifest = make_manifest(str(out / "curated" / "manifest.parquet"), local_corpus, per_source=2)
    params = AblationParams(
        model=tiny_vlm_dir, manifest_uri=manifest, output_uri=str(out / "runs"), run_name="a1", seeds=2,
        robot={"sources": local_corpus.robot, "heldout_fraction": 0.3}, head={"hidden_dim": 16},
        midtrain={**TINY, "steps": 2}, finetune={**TINY, "steps": 4, "eval_every": 2},
        executor="local")
    return params, ablation(params), mlflow.MlflowClient(mlflow_store)


@pytest.fixture(scope="module")
def on_ray(done, ray_local):
    """Seed 0 of the same ablation with every unit a Ray task (2 CPUs: two of the three units at once)."""
    params, _, _ = done
    params = params.model_copy(update={"run_name": "a1-ray", "executor": "ray", "seeds": 1})
    return params, ablation(params)


def _children(client: mlflow.MlflowClient, parent: str) -> list:
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def test_every_run_is_a_finished_child_of_one_parent(done):
    params, report, client = done
    runs = _children(client, report.mlflow_run_id)
    kinds = sorted((r.data.tags["ablation.arm"], r.data.tags["kind"], r.data.tags["ablation.seed"]) for r in runs)
    expected = sorted([(arm, "finetune", str(s)) for arm in ("none", "random", "curated") for s in (0, 1)]
                      + [(arm, "midtrain", str(s)) for arm in ("random", "curated") for s in (0, 1)])
    assert kinds == expected
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.get_run(report.mlflow_run_id).data.tags["kind"] == "ablation"
    for r in runs:  # a fine-tuning run names the mid-training run its model came from
        if r.data.tags["kind"] == "finetune" and r.data.tags["ablation.arm"] != "none":
            upstream = client.get_run(r.data.tags["lineage.parent_run_id"])
            assert upstream.data.tags["ablation.arm"] == r.data.tags["ablation.arm"]
            assert upstream.data.tags["ablation.seed"] == r.data.tags["ablation.seed"]


def test_arms_get_the_same_budget(done):
    params, report, client = done
    runs = _children(client, report.mlflow_run_id)
    fine = [r for r in runs if r.data.tags["kind"] == "finetune"]
    mid = [r for r in runs if r.data.tags["kind"] == "midtrain"]
    for key in ("train.steps", "robot.split_seed", "robot.heldout_fraction", "train.batch_size", "train.lr"):
        assert len({r.data.params[key] for r in fine}) == 1, key
    for key in ("train.steps", "train.batch_size", "train.lr"):
        assert len({r.data.params[key] for r in mid}) == 1, key
    assert {r.data.params["train.steps"] for r in fine} == {"4"}
    assert {r.data.params["train.steps"] for r in mid} == {"2"}
    assert len({r.data.tags["ablation.heldout_episodes"] for r in runs}) == 1
    k = 8  # 2 selected rows of each of the 4 pool sources
    for r in mid:  # the same number of mid-training samples, read from the manifest each run trained on
        assert read_sidecar(r.data.tags["manifest_uri"])["selected"] == k
    # every fine-tuning run was evaluated at the same steps on the same held-out episodes
    steps = {tuple(m.step for m in client.get_metric_history(r.info.run_id, "eval/loss")) for r in fine}
    assert steps == {(2, 4)}


def test_random_arm_draws_uniformly_and_curated_arm_reads_the_selection(done):
    params, report, client = done
    pool = read_manifest(params.manifest_uri)
    for r in _children(client, report.mlflow_run_id):
        if r.data.tags["kind"] != "midtrain":
            continue
        uri = r.data.tags["manifest_uri"]
        if r.data.tags["ablation.arm"] == "curated":
            assert uri == params.manifest_uri
            continue
        drawn = read_manifest(uri)
        seed = int(r.data.tags["ablation.seed"])
        expected = np.zeros(pool.num_rows, bool)
        expected[np.random.default_rng(seed).choice(pool.num_rows, size=8, replace=False)] = True
        assert drawn["sample_id"].to_pylist() == pool["sample_id"].to_pylist()  # the same rows, the pool
        assert drawn["selected"].to_pylist() == expected.tolist()
        assert read_sidecar(uri)["draw_seed"] == seed


def test_result_is_published_to_mlflow_and_beside_the_runs(done, tmp_path):
    params, report, client = done
    names = {a.path for a in client.list_artifacts(report.mlflow_run_id, "ablation")}
    assert names == {f"ablation/{n}" for n in ("ablation.html", "curves.png", "result.json", "summary.md")}
    local = client.download_artifacts(report.mlflow_run_id, "ablation/result.json", str(tmp_path))
    result = json.loads(Path(local).read_text())
    assert result["verdict"] == report.verdict and "curated" in report.verdict
    assert [row["arm"] for row in result["arms"]] == ["none", "random", "curated"]
    assert {p["pair"] for p in result["pairs"]} == {"random − none", "curated − none", "curated − random"}
    page = read_bytes(report.html_uri).decode()
    assert "data:image/png;base64," in page and report.verdict.split(":")[0] in page
    metrics = client.get_run(report.mlflow_run_id).data.metrics
    assert np.isfinite(metrics["curated/auc_loss"]) and np.isfinite(metrics["none/final_loss"])


def test_a_finished_ablation_is_not_redone(done):
    params, report, client = done
    before = len(_children(client, report.mlflow_run_id))
    again = ablation(params)
    assert again == report
    assert len(_children(client, report.mlflow_run_id)) == before


# what a unit computes (not how fast it ran): equal, value for value, whichever executor ran it
COMPUTED = ("loss", "lr", "grad_norm", "eval/loss", "eval/l1/arm", "eval/gripper_accuracy")


def _histories(client: mlflow.MlflowClient, parent: str, seeds: int) -> dict:
    out = {}
    for r in _children(client, parent):
        if int(r.data.tags["ablation.seed"]) >= seeds:
            continue
        key = (r.data.tags["ablation.arm"], r.data.tags["ablation.seed"], r.data.tags["kind"])
        out[key] = {m: [(h.step, h.value) for h in client.get_metric_history(r.info.run_id, m)]
                    for m in COMPUTED if m in r.data.metrics}
    return out


def test_units_on_ray_give_the_same_numbers(done, on_ray):
    params, report, client = done
    ray_params, ray_report = on_ray
    assert ray_report.mlflow_run_id != report.mlflow_run_id
    sequential, parallel = (_histories(client, r.mlflow_run_id, 1) for r in (report, ray_report))
    assert len(parallel) == 5 and parallel == sequential  # 3 fine-tuning + 2 mid-training child runs of seed 0
    for arm in params.arms:
        unit = f"arms/{arm}/seed0/result.json"
        here, there = (json.loads(read_bytes(f"{r.run_uri}/{unit}")) for r in (report, ray_report))
        assert there["curves"] == here["curves"] and there["midtrain_samples"] == here["midtrain_samples"]
    assert [(u["arm"], u["seed"]) for u in ray_report.units] == [("none", 0), ("random", 0), ("curated", 0)]


def test_units_on_ray_are_children_of_one_parent_and_overlap(on_ray, done):
    _, _, client = done
    _, ray_report = on_ray
    runs = _children(client, ray_report.mlflow_run_id)
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {ray_report.mlflow_run_id}
    assert client.get_run(ray_report.mlflow_run_id).info.status == "FINISHED"
    # two units at once: some child run started before another one ended, in another unit
    spans = sorted((r.info.start_time, r.info.end_time, r.data.tags["ablation.arm"], r.data.tags["ablation.seed"])
                   for r in runs)
    assert any(b[0] < a[1] and a[2:] != b[2:] for a, b in zip(spans, spans[1:], strict=False)), spans


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_failing_unit_fails_the_flow_naming_arm_and_seed(done, executor, request):
    params, _, client = done
    if executor == "ray":
        request.getfixturevalue("ray_local")
    failing = params.model_copy(update={"run_name": f"fail-{executor}", "executor": executor, "seeds": 1,
                                        "arms": ["none", "curated"]})
    for arm in failing.arms:  # a stored result that cannot be read: the unit raises before any training
        publish_bytes(f"{failing.output_uri}/{failing.run_name}/arms/{arm}/seed0/result.json", b"{not json")
    with pytest.raises(UnitFailed, match="arm none, seed 0: JSONDecodeError") as failed:
        ablation(failing)
    # on Ray the units in flight finish and every failure is named; here the first one stops the run
    assert ("arm curated, seed 0" in str(failed.value)) == (executor == "ray")
    parent = json.loads(read_bytes(f"{failing.output_uri}/{failing.run_name}/mlflow_run.json"))["run_id"]
    assert client.get_run(parent).info.status == "FAILED"


@pytest.mark.usefixtures("ray_local")
def test_a_cluster_without_room_for_a_unit(done):
    params, _, client = done
    wide = params.model_copy(update={"run_name": "wide", "executor": "ray", "unit_cpus": 4})
    with pytest.raises(ValueError, match="unit_cpus 4 / unit_gpus 0.0: no node of the Ray cluster has room"):
        ablation(wide)  # refused: the local Ray has 2 CPUs, so no unit could ever be placed
    auto = wide.model_copy(update={"run_name": "wide-auto", "executor": "auto", "ray_address": "auto", "seeds": 1,
                                   "arms": ["none", "curated"]})
    report = ablation(auto)  # auto: the configured cluster has no room, so the units run in this process
    assert [(u["arm"], u["seed"]) for u in report.units] == [("none", 0), ("curated", 0)]
    assert client.get_run(report.mlflow_run_id).info.status == "FINISHED"
