"""The embedding actor computes on the CPUs it was given, and the job's CPU defaults give the model most of a
CPU-only machine (measured: an actor on one torch thread of two ran at 0.55 of a bare loop)."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError
from ray import cloudpickle

from core.location import Location
from estimator.backbones.fingerprint import describe
from estimator.backbones.tiny import save_tiny_backbone
from estimator.threads import threads_for
from tasks.cache import EmbeddingCache
from tasks.embed import Embed
from tasks.embed_shards import ShardEmbedder, _check_fits, embed_cpus
from tasks.executor import Job, Resources, run
from tasks.executor.on_ray import RayActors
from tasks.ray_config import RayConfig


class _ThreadsProbe(ShardEmbedder):
    """A ``ShardEmbedder`` (so its real ``setup``) that reports the actor's torch threads instead of embedding."""

    def __call__(self, job: object) -> dict:
        import torch

        return {"threads": torch.get_num_threads()}


def test_threads_round_the_cpus_up():
    assert [threads_for(c) for c in (0.25, 1, 1.5, 2, 14.75)] == [1, 1, 2, 2, 15]


def test_cpu_only_defaults_give_the_model_and_its_decoding_what_reading_leaves():
    two = embed_cpus(2, actors=1, gpus=0)
    assert (two.actor, two.read, two.prepare, two.in_actor) == (1.75, 0.25, 0.0, True) and threads_for(two.actor) == 2
    assert embed_cpus(16, actors=1, gpus=0).actor == 15.75
    assert embed_cpus(16, actors=2, gpus=0).actor == 7.75  # shared by the actors
    assert embed_cpus(32, actors=1, gpus=0, node_cpus=8).actor == 7.75  # an actor fits on one node
    gpu = embed_cpus(16, actors=1, gpus=1)
    assert (gpu.actor, gpu.read, gpu.prepare, gpu.in_actor) == (1.0, 0.5, 0.5, False)  # decoding on CPU tasks
    assert embed_cpus(2, actors=1, gpus=0, actor=1.0, read=0.5).actor == 1.0  # a value given is kept


def test_cpu_only_tasks_leave_cpus_for_the_preparing_tasks():
    two = embed_cpus(2, actors=1, gpus=0, where="tasks")
    assert (two.actor, two.read, two.prepare, two.in_actor) == (1.5, 0.25, 0.25, False) and threads_for(1.5) == 2
    sixteen = embed_cpus(16, actors=1, gpus=0, where="tasks")
    assert (sixteen.actor, sixteen.prepare) == (14.75, 1.0) and threads_for(sixteen.actor) == 15
    assert embed_cpus(16, actors=2, gpus=0, where="tasks").actor == 7.25
    assert embed_cpus(16, actors=1, gpus=1, where="actor").in_actor  # a GPU actor decodes itself when told to


def test_prepare_is_validated_naming_the_field():
    with pytest.raises(ValidationError, match=r"prepare\n.*'auto', 'actor' or 'tasks'"):
        RayConfig(prepare="threads")
    with pytest.raises(ValidationError, match="ray.prepare_cpus sizes the preparing tasks"):
        RayConfig(prepare="actor", prepare_cpus=0.5)


def test_cpu_only_defaults_fit_the_cluster(monkeypatch, tmp_path):
    """The defaults are schedulable: ``_check_fits`` accepts them with CPUs left for one preparing task."""
    import tasks.embed_shards as module

    for cpus, actors, where in ((2, 1, "auto"), (16, 1, "auto"), (16, 3, "auto"), (2, 1, "tasks"), (16, 3, "tasks")):
        monkeypatch.setattr(module.ray, "cluster_resources", lambda c=cpus: {"CPU": c})
        got = embed_cpus(cpus, actors=actors, gpus=0, where=where)
        stage = Embed(backbone=None, resources=Resources(cpus=got.actor))
        assert _check_fits(stage, actors=actors, read_cpus=got.read, prepare_cpus=got.prepare) >= got.prepare - 1e-9


@pytest.fixture
def on_ray(ray_local):
    """The local Ray instance, with this module's probe sent by value (Ray workers cannot import tests)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.usefixtures("on_ray")
def test_an_actor_runs_torch_on_the_cpus_it_was_given(tmp_path):
    """1.5 CPUs on the 2-CPU test cluster: Ray's own OMP_NUM_THREADS would be 1; the actor computes on 2."""
    backbone = save_tiny_backbone("open_clip", str(tmp_path / "model"), seed=0)
    cache = EmbeddingCache(root=Location(str(tmp_path / "cache")), fingerprint=describe(backbone).fingerprint)
    probe = _ThreadsProbe(embed=Embed(backbone=backbone, resources=Resources(cpus=1.5)), cache=cache,
                          prepare_cpus=0.5, prepare_depth=1)
    report = run(Job(step="probe", units=[0], work=probe, name=str, samples=lambda row: 0),
                 RayActors(actors=1, cpus=1.5))
    assert not report.failures and [r["threads"] for r in report.rows] == [2]
