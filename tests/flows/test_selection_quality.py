"""Selection quality against the synthetic corpus's ground truth: the estimator beats the paper's baselines."""

from __future__ import annotations

import pandas as pd
import pytest

from estimator.backbones.tiny import save_tiny_backbone
from estimator.scorer import ScorerConfig
from flows.curate import curate
from flows.params import CurateParams
from tasks.manifest import read_manifest
from tasks.synth import SynthConfig, generate_corpus

pytestmark = pytest.mark.usefixtures("prefect_api", "ray_local")


@pytest.fixture(scope="module")
def precision(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    info = generate_corpus(str(root / "corpus"), SynthConfig(seed=3, samples_per_source=150, shard_size=50))
    # Random weights: the text tower only adds noise, so the image tower alone forms the vector here.
    backbone = save_tiny_backbone("open_clip", str(root / "model"), seed=0).model_copy(update={"modality": "image"})
    truth = pd.read_parquet(info.ground_truth_uri)
    k = int(truth["aligned"].sum())

    def run(method: str) -> float:
        params = CurateParams(
            pool=info.pool,
            robot=info.robot,
            backbone=backbone,
            k=k,
            output_uri=str(root / "runs"),
            scorer=ScorerConfig(method=method),
            run_name=method,
        )
        manifest = read_manifest(curate(params).manifest_uri).to_pandas().merge(truth, on="sample_id")
        return float(manifest.loc[manifest["selected"], "aligned"].mean())

    return {m: run(m) for m in ("estimator", "random", "mean_distance", "knn")}


def test_estimator_precision_is_high(precision):
    assert precision["estimator"] >= 0.65, precision


@pytest.mark.parametrize("baseline", ["random", "mean_distance", "knn"])
def test_estimator_beats_baseline(precision, baseline):
    assert precision["estimator"] > precision[baseline] + 0.05, precision
