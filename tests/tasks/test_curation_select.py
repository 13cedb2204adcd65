"""The curation's selection step (``curation.score_select_write``, the selection engine with one worker) in each
selection mode on a small cache, against an independent expectation (``selection_expect``): top-K, the seeded
importance draw and near-duplicate removal on the columns the scorer reads; and how the record travels on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.contracts import ERRORS
from core.location import Location
from core.manifest import read_manifest
from estimator.baselines import MeanDistanceScorer
from estimator.features import ColumnScorer
from tasks import curation
from tasks.cache import EmbeddingCache
from tasks.distributed_select import DistributedSelection
from tasks.score import CachedShard
from tasks.select import SelectionConfig
from tests.tasks.selection_expect import expected_manifest

pytestmark = pytest.mark.usefixtures("ray_local")

COPIES = [2, 13, 25, 30]  # pool positions holding one image (columns 0:4) with different texts (columns 4:8)
IMAGE = np.array([3.0, 1.0, 2.0, 3.0], np.float32)


def scorer(columns: slice = slice(0, 4)) -> ColumnScorer:
    """Scores by closeness to ``IMAGE`` on ``columns`` (the image part by default, like an image-only estimator)."""
    width = columns.stop - columns.start if columns.stop else 8
    return ColumnScorer(MeanDistanceScorer(np.resize(IMAGE, (1, width))), columns)


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> curation.Plan:
    """4 shards over 2 sources (one empty), 32 samples; the copies are the robot's image and score highest."""
    cache = EmbeddingCache(root=Location(str(tmp_path_factory.mktemp("cache"))), fingerprint="fp")
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    x[COPIES, :4] = IMAGE
    shards, start = [], 0
    for i, rows in enumerate([10, 0, 14, 8]):
        source = ("web", "vqa")[i % 2]
        shard = CachedShard(source=source, shard_uri=f"/data/{source}/{i}.tar", shard=f"{i}.tar",
                            entry=cache.at(f"{cache.root}/fp/{i}"))
        table = pa.table({"key": [f"{j:03d}" for j in range(rows)], "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(x[start:start + rows].reshape(-1)), 8)})
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
        start += rows
    return curation.Plan(backbone=None, cache=cache, pool=shards, robot=[], todo=[],  # type: ignore[arg-type]
                         listing_errors=ERRORS.empty_table())


def select(plan: curation.Plan, uri: str, k: int, selection: SelectionConfig | None = None,
           score_with: ColumnScorer | None = None, sidecar: dict | None = None) -> tuple[pa.Table, dict]:
    sidecar = curation.score_select_write(plan, score_with or scorer(), uri, sidecar or {}, k=k, fraction=None,
                                          selection=selection or SelectionConfig(), per_source_cap=None,
                                          options=DistributedSelection(shards_per_file=2, workers=1))
    return read_manifest(uri), sidecar


def selected_positions(table: pa.Table) -> list[int]:
    return np.flatnonzero(table["selected"].to_numpy(zero_copy_only=False)).tolist()


def test_top_k_is_the_default(plan, tmp_path):
    got, sidecar = select(plan, str(tmp_path / "m.parquet"), 6)
    expected, _ = expected_manifest(plan.cache, plan.pool, scorer(), 6)
    assert got.equals(expected.cast(got.schema))
    assert set(COPIES) <= set(selected_positions(got))  # without dedup the copies fill 4 of the 6
    assert sidecar["selection"] == {"mode": "top_k", "seed": None, "dedup_threshold": None, "duplicates_skipped": 0}


def test_importance_draw_is_seeded_and_ranks_stay_the_score_rank(plan, tmp_path):
    top, _ = select(plan, str(tmp_path / "top.parquet"), 8)
    draws = {}
    for run, seed in enumerate((0, 0, 1, 2)):
        config = SelectionConfig(mode="importance", seed=seed)
        got, sidecar = select(plan, str(tmp_path / f"{run}.parquet"), 8, config)
        expected, _ = expected_manifest(plan.cache, plan.pool, scorer(), 8, selection=config)
        assert got.equals(expected.cast(got.schema)) and sidecar["selected"] == 8
        assert got["rank"].equals(top["rank"])  # the rank is the score's whatever the mode
        assert sidecar["selection"] == {"mode": "importance", "seed": seed, "dedup_threshold": None,
                                        "duplicates_skipped": 0}
        draws.setdefault(seed, []).append(selected_positions(got))
    assert draws[0][0] == draws[0][1]  # same seed, same draw
    assert draws[1][0] != draws[2][0]  # another seed, another draw
    assert any(d[0] != selected_positions(top) for d in draws.values())  # a draw, not the top-K


@pytest.mark.parametrize("mode", ["top_k", "importance"])
def test_dedup_skips_copies_on_the_scorers_columns_and_counts_them(plan, tmp_path, mode):
    config = SelectionConfig(mode=mode, seed=3, dedup_threshold=0.99)
    got, sidecar = select(plan, str(tmp_path / "m.parquet"), 6, config)
    expected, skipped = expected_manifest(plan.cache, plan.pool, scorer(), 6, selection=config)
    assert got.equals(expected.cast(got.schema))
    assert got["selected"].to_numpy(zero_copy_only=False)[COPIES].sum() == 1  # one copy kept, the others passed over
    assert sidecar["selection"]["duplicates_skipped"] == skipped > 0
    assert sidecar["selection"]["seed"] == (3 if mode == "importance" else None)
    # scored on the whole vector, the copies' texts differ: nothing is a near-duplicate
    _, whole = select(plan, str(tmp_path / "whole.parquet"), 6, config, scorer(slice(0, 8)))
    assert whole["selection"]["duplicates_skipped"] == 0


def test_the_record_reaches_the_sidecar_report_and_mlflow(plan, tmp_path):
    from estimator.backbones.backbone import BackboneSpec
    from tasks.curation_record import CurateReport, build_sidecar, mlflow_metrics, mlflow_params

    backbone = BackboneSpec(kind="open_clip", model="ViT-B-32")
    common = dict(run_id="r", backbone=backbone, fingerprint="fp", embed_dim=8, cache_uri="/c", cache_entries={},
                  scorer_metrics={}, estimator_uri=None, k=6, pool=[], robot=[], errors_uri="/e", reasons=[])
    assert build_sidecar(**common)["selection"] == SelectionConfig().record()
    config = SelectionConfig(mode="importance", seed=3, dedup_threshold=0.99)
    _, sidecar = select(plan, str(tmp_path / "m.parquet"), 6, config, sidecar=build_sidecar(
        **common, selection=config.record()))  # as the flow builds it: the engine adds what it skipped
    assert sidecar["selection"] == {"mode": "importance", "seed": 3, "dedup_threshold": 0.99,
                                    "duplicates_skipped": sidecar["selection"]["duplicates_skipped"]}
    skipped = sidecar["selection"]["duplicates_skipped"]
    report = CurateReport(run_id="r", run_uri="/r", manifest_uri="/m", pool_samples=32, selected=6, per_source={},
                          quarantined={}, selection=sidecar["selection"], shards_embedded=0, shards_cached=4,
                          scorer={}, seconds=1.0)
    assert mlflow_metrics(report)["duplicates_skipped"] == skipped > 0
    params = mlflow_params(backbone=backbone, scorer="estimator", fraction=None, sidecar=sidecar)
    assert (params["selection_mode"], params["selection_seed"], params["dedup_threshold"]) == ("importance", 3, 0.99)
