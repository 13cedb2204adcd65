"""``curation.select``, the plain step, in each selection mode on a small cache (no Prefect, no Ray): top-K, the
seeded importance draw and near-duplicate removal on the columns the scorer reads."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.contracts import ERRORS
from tasks import curation
from tasks.cache import EmbeddingCache
from tasks.dedup import PoolVectors
from tasks.score import CachedShard, PoolScores, score_pool
from tasks.select import SelectionConfig, importance_order, rank_order, ranks_from_order

COPIES = [2, 13, 25, 30]  # pool positions holding one image (columns 0:4) with different texts (columns 4:8)


class FirstColumn:
    """Scores by column 0, reading the image part (columns 0:4) of an 8-wide vector, like ``ColumnScorer``."""

    name = "first_column"
    columns = slice(0, 4)

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
        return features[:, 0]


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[curation.Plan, PoolScores]:
    """4 shards over 2 sources (one empty), 32 samples; the copies score highest and tie."""
    cache = EmbeddingCache(root=str(tmp_path_factory.mktemp("cache")), fingerprint="fp")
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    x[COPIES, :4] = [10.0, 1.0, 2.0, 3.0]
    shards, start = [], 0
    for i, rows in enumerate([10, 0, 14, 8]):
        source = ("web", "vqa")[i % 2]
        shard = CachedShard(source=source, shard_uri=f"/data/{source}/{i}.tar", shard=f"{i}.tar",
                            entry=f"{cache.root}/fp/{i}")
        table = pa.table({"key": [f"{j:03d}" for j in range(rows)], "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(x[start:start + rows].reshape(-1)), 8)})
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
        start += rows
    plan = curation.Plan(backbone=None, cache=cache, pool=shards, robot=[], todo=[],  # type: ignore[arg-type]
                         listing_errors=ERRORS.empty_table())
    return plan, score_pool(cache, shards, FirstColumn())


def test_top_k_is_the_default_and_unchanged(pool):
    _, scores = pool
    chosen = curation.select(scores, k=6, fraction=None, per_source_cap=None)
    order = rank_order(scores.scores)
    assert np.flatnonzero(chosen.chosen).tolist() == sorted(order[:6].tolist())
    assert set(COPIES) <= set(np.flatnonzero(chosen.chosen))  # without dedup the copies fill 4 of the 6
    assert chosen.record == {"mode": "top_k", "seed": None, "dedup_threshold": None, "duplicates_skipped": 0}


def test_importance_draw_is_seeded_and_ranks_stay_the_score_rank(pool):
    _, scores = pool
    draws = {seed: curation.select(scores, k=8, fraction=None, per_source_cap=None,
                                   config=SelectionConfig(mode="importance", seed=seed)) for seed in (0, 0, 1, 2)}
    again = curation.select(scores, k=8, fraction=None, per_source_cap=None,
                            config=SelectionConfig(mode="importance", seed=0))
    np.testing.assert_array_equal(again.chosen, draws[0].chosen)  # same seed, same draw
    assert not np.array_equal(draws[1].chosen, draws[2].chosen)  # another seed, another draw
    for seed, drawn in draws.items():
        expected = importance_order(scores.scores, seed)[:8]
        assert np.flatnonzero(drawn.chosen).tolist() == sorted(expected.tolist()) and drawn.chosen.sum() == 8
        np.testing.assert_array_equal(drawn.ranks, ranks_from_order(rank_order(scores.scores)))
        assert drawn.record == {"mode": "importance", "seed": seed, "dedup_threshold": None, "duplicates_skipped": 0}
    top = curation.select(scores, k=8, fraction=None, per_source_cap=None)
    assert any(not np.array_equal(d.chosen, top.chosen) for d in draws.values())  # a draw, not the top-K


@pytest.mark.parametrize("mode", ["top_k", "importance"])
def test_dedup_skips_copies_on_the_scorers_columns_and_counts_them(pool, mode):
    plan, scores = pool
    vectors = curation.pool_vectors(plan, FirstColumn())
    assert vectors.columns == slice(0, 4)
    config = SelectionConfig(mode=mode, seed=3, dedup_threshold=0.99)
    chosen = curation.select(scores, k=6, fraction=None, per_source_cap=None, config=config, vectors=vectors)
    assert chosen.chosen.sum() == 6 and chosen.chosen[COPIES].sum() == 1  # one copy kept, the others passed over
    assert chosen.record["duplicates_skipped"] == 3 and chosen.record["dedup_threshold"] == 0.99
    assert chosen.record["seed"] == (3 if mode == "importance" else None)
    np.testing.assert_array_equal(chosen.ranks, ranks_from_order(rank_order(scores.scores)))
    again = curation.select(scores, k=6, fraction=None, per_source_cap=None, config=config, vectors=vectors)
    np.testing.assert_array_equal(again.chosen, chosen.chosen)
    # on the whole vector the copies' texts differ: nothing is a near-duplicate
    whole = PoolVectors(plan.cache, plan.pool, slice(None))
    assert curation.select(scores, k=6, fraction=None, per_source_cap=None, config=config,
                           vectors=whole).record["duplicates_skipped"] == 0


def test_dedup_needs_the_vectors(pool):
    _, scores = pool
    with pytest.raises(ValueError, match="selection.dedup_threshold"):
        curation.select(scores, k=3, fraction=None, per_source_cap=None,
                        config=SelectionConfig(dedup_threshold=0.9))


def test_the_record_reaches_the_sidecar_report_and_mlflow(pool):
    from estimator.backbones.base import BackboneSpec
    from tasks.curation_record import CurateReport, build_sidecar, mlflow_metrics, mlflow_params

    plan, scores = pool
    chosen = curation.select(scores, k=6, fraction=None, per_source_cap=None, vectors=curation.pool_vectors(
        plan, FirstColumn()), config=SelectionConfig(mode="importance", seed=3, dedup_threshold=0.99))
    backbone = BackboneSpec(kind="open_clip", model="ViT-B-32")
    common = dict(run_id="r", backbone=backbone, fingerprint="fp", embed_dim=8, cache_uri="/c", cache_entries={},
                  scorer_metrics={}, estimator_uri=None, k=6, pool=[], robot=[], errors_uri="/e", reasons=[])
    assert build_sidecar(**common)["selection"]["mode"] == "top_k"  # the distributed path records the default
    sidecar = build_sidecar(**common, selection=chosen.record)
    assert sidecar["selection"] == {"mode": "importance", "seed": 3, "dedup_threshold": 0.99,
                                    "duplicates_skipped": 3}
    report = CurateReport(run_id="r", run_uri="/r", manifest_uri="/m", pool_samples=32, selected=6, per_source={},
                          quarantined={}, selection=sidecar["selection"], shards_embedded=0, shards_cached=4,
                          scorer={}, seconds=1.0)
    assert mlflow_metrics(report)["duplicates_skipped"] == 3
    params = mlflow_params(backbone=backbone, scorer="estimator", fraction=None, sidecar=sidecar)
    assert (params["selection_mode"], params["selection_seed"], params["dedup_threshold"]) == ("importance", 3, 0.99)
