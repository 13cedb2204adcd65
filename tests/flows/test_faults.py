"""Faults the curate flow must stop at before any expensive work: vanished inputs, a K the pool cannot meet, a run
name already held or already finished with other parameters."""

from __future__ import annotations

import pytest

from core.location import Location
from core.settings import SourceSpec
from core.storage import StorageAccessError
from estimator.backbones.tiny import save_tiny_backbone
from flows.curate import curate
from flows.params import CurateParams, RayConfig
from tasks.curation import preflight
from tasks.run_folder import RunFolder, RunRefused

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("bb") / "tiny"), seed=0)


@pytest.fixture
def params(local_corpus, backbone, tmp_path) -> CurateParams:
    return CurateParams(
        pool=local_corpus.pool, robot=local_corpus.robot, backbone=backbone, k=5, output_uri=str(tmp_path / "runs"),
        run_name="r", mlflow={"enabled": False},
    )


def _plan(params: CurateParams, **kw):
    return preflight(pool=params.pool, robot=params.robot, backbone_spec=params.backbone, scorer_config=params.scorer,
                     cache_at=params.cache, storage=None, **kw)


@pytest.mark.parametrize("uri", ["{root}/nothing/*.tar", "{root}/nothing/{{0..3}}.tar", "{root}/nothing/"])
def test_a_source_matching_nothing_fails_preflight_naming_its_field(params, tmp_path, uri):
    vanished = SourceSpec(name="gone", format="webdataset", uri=uri.format(root=tmp_path))
    pool = [*params.pool[:2], vanished, *params.pool[2:]]
    with pytest.raises(ValueError, match=r"^pool\.2\.uri: no readable shard at .*nothing"):
        _plan(params.model_copy(update={"pool": pool}))
    plan = _plan(params.model_copy(update={"pool": pool}), allow_empty_sources=True)
    assert {s.source for s in plan.pool} == {s.name for s in params.pool}


def test_k_larger_than_a_knowable_pool_is_refused_before_embedding(params, local_corpus):
    parquet = [s for s in local_corpus.pool if s.format == "parquet"]
    assert parquet, "the tiny corpus has a Parquet pool source"
    too_many = params.model_copy(update={"pool": parquet, "k": local_corpus.counts[parquet[0].name] * 10})
    # No Ray session exists in this module: reaching the embedding step would start one and take far longer.
    with pytest.raises(ValueError, match="larger than the pool"):
        curate(too_many)


def test_a_held_run_name_is_refused(params):
    run = RunFolder.open(Location(params.output_uri), params.run_name)
    with run.claim(), pytest.raises(RunRefused, match="run r is in use by another run"):
        curate(params)


def test_a_finished_run_asked_with_other_parameters_is_refused(params):
    run = RunFolder.open(Location(params.output_uri), params.run_name)
    report = {"run_id": "r", "run_uri": run.uri, "manifest_uri": run.path("manifest.parquet"), "pool_samples": 1,
              "selected": 1, "per_source": {}, "quarantined": {}, "shards_embedded": 0, "shards_cached": 0,
              "scorer": {}, "seconds": 1.0}
    run.write_json("params.json", params)
    run.write_json("report.json", report)
    run.mark_complete()
    assert curate(params.model_copy(update={"ray": RayConfig(embed_actors=2)})).run_id == "r"  # how it runs: same run
    with pytest.raises(RunRefused, match=r"run r already finished .*\(k differ\)"):
        curate(params.model_copy(update={"k": 6}))


def test_unwritable_output_fails_before_any_work(params, s3):
    missing = params.model_copy(update={"output_uri": "s3://no-such-bucket/runs", "storage": s3.storage})
    with pytest.raises(StorageAccessError, match=r"^output_uri \(s3://no-such-bucket/runs\): the bucket does not"):
        curate(missing)
