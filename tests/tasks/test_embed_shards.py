"""The distributed embedding job on a real local Ray, and its Ray Data wrapper's arguments."""

from __future__ import annotations

import pytest
import ray.data

from core.read import list_shards
from estimator.backbones.base import BackboneSpec
from estimator.backbones.tiny import save_tiny_backbone
from tasks.base import Resources
from tasks.cache import EmbeddingCache, vectors
from tasks.embed import Embed
from tasks.embed_shards import ShardJob, embed_shards
from tasks.ray_stage import map_stage


class RecordingDataset:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def map_batches(self, fn, **kwargs):
        self.calls.append((fn, kwargs))
        return self


def test_stage_with_a_model_runs_as_an_actor_pool():
    stage = Embed(
        backbone=BackboneSpec(kind="open_clip", model="ViT-B-32"), batch_size=32, resources=Resources(cpus=0.5, gpus=1)
    )
    ds = RecordingDataset()
    map_stage(ds, stage, actors=3)
    ((_, kwargs),) = ds.calls
    assert kwargs["fn_constructor_kwargs"] == {"stage": stage}
    assert kwargs["batch_size"] == 32 and kwargs["batch_format"] == "pyarrow"
    assert kwargs["num_cpus"] == 0.5 and kwargs["num_gpus"] == 1
    assert isinstance(kwargs["compute"], ray.data.ActorPoolStrategy)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("model")), seed=0)


@pytest.mark.usefixtures("ray_local")
def test_shards_whose_size_is_a_multiple_of_the_batch(local_corpus, tiny_backbone, tmp_path):
    """10-row shards in batches of 5: the end-of-shard marker arrives alone in a batch."""
    spec = local_corpus.pool[2]
    cache = EmbeddingCache(root=str(tmp_path), fingerprint="test")
    jobs = [ShardJob(spec=spec, shard_uri=u, entry=cache.entry(u)) for u in list_shards(spec)]
    summary = embed_shards(
        jobs, embed=Embed(backbone=tiny_backbone, batch_size=5, resources=Resources(cpus=1)), cache=cache, read_cpus=0.5
    )
    assert summary.shards_embedded == len(jobs) and summary.samples_embedded == local_corpus.counts[spec.name]
    assert all(vectors(cache.read(j.entry)).shape[1] == 64 for j in jobs)


@pytest.mark.usefixtures("ray_local")
def test_job_that_cannot_fit_is_refused(local_corpus, tiny_backbone, tmp_path):
    spec = local_corpus.pool[2]
    cache = EmbeddingCache(root=str(tmp_path), fingerprint="test")
    shard = list_shards(spec)[0]
    with pytest.raises(ValueError, match="needs 2.5 CPUs"):
        embed_shards(
            [ShardJob(spec=spec, shard_uri=shard, entry=cache.entry(shard))],
            embed=Embed(backbone=tiny_backbone, resources=Resources(cpus=1)),
            cache=cache,
            actors=2,
        )
