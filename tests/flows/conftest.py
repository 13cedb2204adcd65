"""Fixtures of the training flow tests: tiny models, tiny training settings, and one local pipeline run (curate ->
midtrain -> finetune on the tiny corpus) that several tests read."""

from __future__ import annotations

import pytest

from core.settings import StorageConfig
from estimator.backbones.backbone import BackboneSpec
from estimator.backbones.tiny import save_tiny_backbone
from flows.params import CurateParams
from flows.training_params import PipelineParams
from synth import CorpusInfo
from training.vlm import save_tiny_vlm

TINY_TRAIN = {"steps": 4, "batch_size": 4, "log_every": 1, "shuffle_buffer": 16}


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> BackboneSpec:
    spec = save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("backbone")), seed=0)
    return spec.model_copy(update={"modality": "image"})


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_vlm(str(tmp_path_factory.mktemp("tiny-vlm")), seed=0)


def pipeline_params(
    corpus: CorpusInfo,
    backbone: BackboneSpec,
    vlm: str,
    out: str,
    *,
    run_name: str,
    storage: StorageConfig | None = None,
    tracking_uri: str | None = None,
) -> PipelineParams:
    """The tiny pipeline: 20% of the pool selected, 4 steps per stage, an evaluation at steps 2 and 4."""
    storage = storage or StorageConfig()
    return PipelineParams(
        curate=CurateParams(
            pool=corpus.pool,
            robot=corpus.robot,
            storage=storage,
            backbone=backbone,
            fraction=0.2,
            output_uri=f"{out}/curate",
            run_name=run_name,
            ray={"embed_batch_size": 16},
            report_per_set=0,
            mlflow={"tracking_uri": tracking_uri},
        ),
        midtrain={
            "model": vlm,
            "output_uri": f"{out}/midtrain",
            "train": TINY_TRAIN,
            "mlflow": {"tracking_uri": tracking_uri, "experiment": "emt-training"},
        },
        finetune={
            "output_uri": f"{out}/finetune",
            "robot": {"sources": corpus.robot, "heldout_fraction": 0.3},
            "head": {"hidden_dim": 16},
            "train": {**TINY_TRAIN, "eval_every": 2},
            "mlflow": {"tracking_uri": tracking_uri, "experiment": "emt-training"},
        },
    )


@pytest.fixture(scope="session")
def make_pipeline_params():
    return pipeline_params


@pytest.fixture(scope="session")
def local_pipeline(prefect_api, ray_local, local_corpus, tiny_backbone, tiny_vlm_dir, tmp_path_factory):
    """(params, report) of the pipeline run ``p1`` on the local tiny corpus, tracked in the SQLite store."""
    from flows.pipeline import pipeline

    out = str(tmp_path_factory.mktemp("runs"))
    params = pipeline_params(local_corpus, tiny_backbone, tiny_vlm_dir, out, run_name="p1")
    return params, pipeline(params)
