"""Selection quality against the synthetic corpus's ground truth: the estimator beats the paper's baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.manifest import read_manifest
from estimator.backbones.tiny import save_tiny_backbone
from estimator.scorer import ScorerConfig
from flows.curate import CurateReport, curate
from flows.params import CurateParams
from synth import SynthConfig, generate_corpus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api", "ray_local")]


@pytest.fixture(scope="module")
def quality(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    info = generate_corpus(str(root / "corpus"), SynthConfig(seed=3, samples_per_source=150, shard_size=50))
    # Random weights: the text tower only adds noise, so the image tower alone forms the vector here.
    backbone = save_tiny_backbone("open_clip", str(root / "model"), seed=0).model_copy(update={"modality": "image"})
    truth = pd.read_parquet(info.ground_truth_uri)
    k = int(truth["aligned"].sum())

    def run(method: str) -> tuple[float, CurateReport]:
        params = CurateParams(
            pool=info.pool,
            robot=info.robot,
            backbone=backbone,
            k=k,
            output_uri=str(root / "runs"),
            scorer=ScorerConfig(method=method),
            run_name=method,
            report_per_set=300 if method == "estimator" else 0,
        )
        report = curate(params)
        manifest = read_manifest(report.manifest_uri).to_pandas().merge(truth, on="sample_id")
        return float(manifest.loc[manifest["selected"], "aligned"].mean()), report

    runs = {m: run(m) for m in ("estimator", "random", "mean_distance", "knn")}
    return {m: p for m, (p, _) in runs.items()} | {"report": runs["estimator"][1]}


@pytest.fixture(scope="module")
def precision(quality):
    return {m: p for m, p in quality.items() if m != "report"}


def test_estimator_precision_is_high(precision):
    assert precision["estimator"] >= 0.65, precision


@pytest.mark.parametrize("baseline", ["random", "mean_distance", "knn"])
def test_estimator_beats_baseline(precision, baseline):
    assert precision["estimator"] > precision[baseline] + 0.05, precision


def test_report_explains_the_selection(quality):
    """The paper's findings, as properties of the run's metrics (not of its pictures)."""
    report = quality["report"]
    metrics = json.loads(Path(report.report_uri).with_name("report_metrics.json").read_text())
    median = {source: q["q50"] for source, q in metrics["score_quantiles"].items()}
    assert median["tabletop"] > median["docs"] and median["tabletop"] > median["charts"]
    mmd = report.mmd2
    for robot in ("pick_place", "stack_blocks"):
        assert mmd["selected"][robot] < mmd["pool"][robot]  # the selection moved toward the robot data
    div = report.diversity
    assert div["selected"] > max(div["pick_place"], div["stack_blocks"])  # more diverse than the robot sets
    assert div["selected"] >= 0.8 * div["pool"]  # and keeps most of the pool's diversity


def test_report_is_self_contained(quality):
    html = Path(quality["report"].report_uri).read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "http://" not in html and "https://" not in html


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    """The shortcut preset: robot instructions worded like control logs, robot-like images under alt-texts and
    documents under robot-style instructions. The backbone keeps its default modality (image+text)."""
    root = tmp_path_factory.mktemp("shortcut")
    config = SynthConfig(seed=3, samples_per_source=150, shard_size=50, robot_episodes=40, frames_per_episode=4,
                         preset="shortcut")
    info = generate_corpus(str(root / "corpus"), config)
    backbone = save_tiny_backbone("open_clip", str(root / "model"), seed=0)
    truth = pd.read_parquet(info.ground_truth_uri)
    k = int(truth["aligned"].sum()) // 2  # a curation keeps a fraction: half the aligned samples

    def run(name: str, scorer: ScorerConfig) -> tuple[float, CurateReport, pd.DataFrame]:
        params = CurateParams(pool=info.pool, robot=info.robot, backbone=backbone, k=k, output_uri=str(root / "runs"),
                              scorer=scorer, run_name=name, report_per_set=0)
        report = curate(params)
        manifest = read_manifest(report.manifest_uri).to_pandas().merge(truth, on="sample_id")
        return float(manifest.loc[manifest["selected"], "aligned"].mean()), report, manifest

    methods = {"default": ScorerConfig(), "before": ScorerConfig(features="all")}
    methods |= {m: ScorerConfig(method=m) for m in ("knn", "mean_distance", "normsim")}
    return {name: run(name, scorer) for name, scorer in methods.items()}


def test_default_survives_the_text_shortcut(shortcut):
    precision = {name: p for name, (p, _, _) in shortcut.items()}
    assert precision["default"] >= 0.9, precision
    assert precision["before"] < precision["default"] - 0.2, precision  # reading the text falls for the wording
    for baseline in ("knn", "mean_distance", "normsim"):
        assert precision[baseline] <= precision["default"] + 0.02, precision


def test_diagnostic_flags_the_leaking_text(shortcut):
    _, default, _ = shortcut["default"]
    _, before, _ = shortcut["before"]
    for report in (default, before):
        assert report.scorer["shortcut"] is True
        assert report.scorer["probe_text_val_accuracy"] >= report.scorer["probe_image_val_accuracy"] + 0.05
    assert default.scorer["features"] == "image" and not default.scorer["shortcut_note"].startswith("WARNING")
    assert before.scorer["shortcut_note"].startswith("WARNING") and "scorer.features='image'" in \
        before.scorer["shortcut_note"]


def test_manifest_scores_are_logits_without_ties(shortcut):
    _, _, manifest = shortcut["default"]
    assert manifest["score"].nunique() == len(manifest)  # no saturation into equal scores
    assert manifest["score"].min() < 0 < manifest["score"].max()  # a logit, not a probability
