"""The estimator kept by what it was fitted on: a re-run on the same vectors and settings loads it (no training),
any change of vectors, sample size or settings fits again, and a baseline is never kept."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import estimator.scorer
from core.contracts import ERRORS
from core.location import Location
from estimator.backbones.fingerprint import BackboneInfo
from estimator.config import EstimatorConfig, ScorerConfig
from tasks import curation
from tasks.cache import EmbeddingCache
from tasks.score import CachedShard

DIM = 8


def _plan(root, *, pool_shards: int = 3) -> curation.Plan:
    """Robot vectors shifted from the pool's, one cache entry per shard (an image+text vector, 4 + 4 columns)."""
    cache = EmbeddingCache(root=Location(str(root)), fingerprint="fp")
    rng = np.random.default_rng(0)
    shards = {"pool": [], "robot": []}
    for role, count, shift in (("robot", 2, 1.5), ("pool", pool_shards, 0.0)):
        for i in range(count):
            shard = CachedShard(source=role, shard_uri=f"/data/{role}/{i}.tar", shard=f"{i}.tar",
                                entry=cache.at(f"{root}/fp/{role}-{i}"))
            x = rng.normal(shift, 1.0, (40, DIM)).astype(np.float32)
            table = pa.table({"key": [f"{j:03d}" for j in range(40)],
                              "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)})
            cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
            shards[role].append(shard)
    info = BackboneInfo(fingerprint="fp", embed_dim=DIM, parts={"kind": "open_clip", "modality": "image+text"})
    return curation.Plan(backbone=info, cache=cache, pool=shards["pool"], robot=shards["robot"], todo=[],
                         listing_errors=ERRORS.empty_table())


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the estimator's trainings (the real one runs)."""
    calls: list[int] = []
    train = estimator.scorer.train_estimator
    monkeypatch.setattr(estimator.scorer, "train_estimator", lambda *a, **k: calls.append(1) or train(*a, **k))
    return calls


CONFIG = ScorerConfig(estimator=EstimatorConfig(max_steps=30, min_steps=5, eval_every=5))


def test_a_rerun_on_the_same_inputs_loads_the_kept_estimator(tmp_path, trainings):
    plan = _plan(tmp_path)
    first, metrics = curation.fit(plan, CONFIG, train_pool_samples=100)
    again, reused = curation.fit(plan, CONFIG, train_pool_samples=100)
    assert trainings == [1]
    assert reused["reused_fit"].startswith(str(tmp_path / "fp" / "estimators"))
    assert {k: v for k, v in reused.items() if k not in ("reused_fit", "seconds")} == {
        k: v for k, v in metrics.items() if k != "seconds"}
    x = np.random.default_rng(1).normal(size=(16, DIM)).astype(np.float32)
    np.testing.assert_array_equal(again.score(x), first.score(x))
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change", ["pool_sample", "seed", "new_shard"])
def test_any_change_of_what_the_fit_reads_fits_again(tmp_path, trainings, change):
    plan = _plan(tmp_path)
    curation.fit(plan, CONFIG, train_pool_samples=100)
    samples, config = 100, CONFIG
    if change == "pool_sample":
        samples = 50
    elif change == "seed":
        config = CONFIG.model_copy(update={"estimator": CONFIG.estimator.model_copy(update={"seed": 1})})
    else:
        plan = _plan(tmp_path, pool_shards=4)
    _, metrics = curation.fit(plan, config, train_pool_samples=samples)
    assert trainings == [1, 1] and "reused_fit" not in metrics


def test_a_baseline_is_not_kept(tmp_path):
    plan = _plan(tmp_path)
    _, metrics = curation.fit(plan, ScorerConfig(method="mean_distance"), train_pool_samples=100)
    assert "reused_fit" not in metrics and not (tmp_path / "fp" / "estimators").exists()
