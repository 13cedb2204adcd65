"""The selection engine's units (a manifest file's score range of shards, a manifest file written) on the executor:
a transient fault is retried under the one policy and the manifest comes out the same; one that persists fails
the pass naming its unit, and nothing is published."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from ray import cloudpickle

from core.contracts import ERRORS
from core.location import Location
from estimator.baselines import MeanDistanceScorer
from tasks.cache import CacheEntry, EmbeddingCache
from tasks.distributed_select import DistributedSelection, score_select_write
from tasks.executor import JobFailed, RetryPolicy
from tasks.score import CachedShard

OPTIONS = DistributedSelection(shards_per_file=2, workers=2, cpus=0.5)


@pytest.fixture
def on_ray(ray_local):
    """The local Ray instance, with this module's cache class sent by value (Ray workers cannot import tests)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class FlakyEntry(CacheEntry):
    """Reads of this entry reset the connection ``faults`` times: ``read`` (the score pass) and ``read_keys`` (the
    manifest pass) each. Attempts are counted in files under ``log``: they add up across Ray workers."""

    log: str = ""
    faults: int = 0

    def _attempt(self, step: str) -> None:
        with (Path(self.log) / step).open("a") as f:
            f.write("x")
        if len((Path(self.log) / step).read_text()) <= self.faults:
            raise ConnectionResetError(104, "Connection reset by peer")

    def read(self, columns: list[str] | None = None) -> pa.Table:
        self._attempt("score")
        return super().read(columns)

    def read_keys(self) -> pa.Table:
        self._attempt("manifest")
        return super().read_keys()


def _flaky(shards: list[CachedShard], log: Path, faults: int) -> list[CachedShard]:
    """``shards`` with the fourth one's entry flaky."""
    flaky = FlakyEntry(shards[3].entry.prefix, log=str(log), faults=faults)
    return [*shards[:3], replace(shards[3], entry=flaky), *shards[4:]]


def _pool(root: Path) -> tuple[EmbeddingCache, list[CachedShard]]:
    cache = EmbeddingCache(root=Location(str(root)), fingerprint="fp")
    rng, shards = np.random.default_rng(3), []
    for i in range(5):
        shard = CachedShard(source="web", shard_uri=f"/data/{i}.tar", shard=f"{i}.tar",
                            entry=cache.at(f"{root}/fp/{i}"))
        x = rng.standard_normal((12, 4)).astype(np.float32)
        table = pa.table({"key": [f"{j:02d}" for j in range(12)],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)})
        cache.write(shard.entry, shard.shard_uri, table, ERRORS.empty_table(), "float32")
        shards.append(shard)
    return cache, shards


def _select(cache: EmbeddingCache, shards: list[CachedShard], uri: Path) -> dict:
    scorer = MeanDistanceScorer(np.ones((1, 4), np.float32))
    return score_select_write(cache=cache, pool=shards, scorer=scorer, manifest_uri=str(uri), sidecar={}, k=20,
                              fraction=None, options=OPTIONS)


@pytest.mark.usefixtures("on_ray")
def test_a_transient_fault_in_a_score_range_or_a_manifest_file_is_retried(tmp_path):
    cache, shards = _pool(tmp_path / "cache")
    clean = _select(cache, shards, tmp_path / "clean" / "manifest.parquet")
    log = tmp_path / "log"
    log.mkdir()
    retried = _select(cache, _flaky(shards, log, faults=1), tmp_path / "retried" / "manifest.parquet")
    assert {p.name: len(p.read_text()) for p in log.iterdir()} == {"score": 2, "manifest": 2}
    assert retried["content_sha256"] == clean["content_sha256"]


@pytest.mark.usefixtures("on_ray")
def test_a_fault_that_outlasts_the_retries_fails_the_pass_naming_its_unit(tmp_path):
    cache, shards = _pool(tmp_path / "cache")
    log = tmp_path / "log"
    log.mkdir()
    uri = tmp_path / "run" / "manifest.parquet"
    with pytest.raises(JobFailed, match=r"score: 1 unit\(s\) failed; .*part-00001.parquet \(ConnectionResetError"):
        _select(cache, _flaky(shards, log, faults=9), uri)
    assert len((log / "score").read_text()) == RetryPolicy().retries + 1
    assert not uri.exists() and not (tmp_path / "run" / "manifest.parquet.scratch").exists()
