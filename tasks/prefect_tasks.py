"""Prefect task wrappers of the curation steps in ``tasks/curation.py``: one ``<step>_task`` per step, running as
the Prefect task ``<step>``, with the step's own signature and no logic of its own (retries on storage I/O only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from core.settings import SourceSpec, StorageConfig
from estimator.backbones.spec import BackboneSpec
from estimator.scorer import Scorer, ScorerConfig
from tasks import curation
from tasks.distributed_select import DistributedSelection
from tasks.embed import Embed
from tasks.embed_shards import EmbedSummary
from tasks.report import build
from tasks.select import SelectionConfig

# Inputs are models and arrays: hashing them for Prefect's result cache would cost more than the step.
_task = {"cache_policy": NONE}


@task(name="preflight", **_task)
def preflight_task(
    *,
    pool: list[SourceSpec],
    robot: list[SourceSpec],
    backbone_spec: BackboneSpec,
    scorer_config: ScorerConfig,
    cache_uri: str,
    storage: StorageConfig | None,
    allow_empty_sources: bool = False,
    actor_gpus: float = 0.0,
) -> curation.Plan:
    return curation.preflight(
        pool=pool,
        robot=robot,
        backbone_spec=backbone_spec,
        scorer_config=scorer_config,
        cache_uri=cache_uri,
        storage=storage,
        allow_empty_sources=allow_empty_sources,
        actor_gpus=actor_gpus,
    )


@task(name="embed", **_task)
def embed_task(
    plan: curation.Plan,
    *,
    embed_stage: Embed,
    storage: StorageConfig | None,
    actors: int,
    read_cpus: float,
    prepare_cpus: float,
    read_batch: int,
    dtype: str,
) -> EmbedSummary:
    return curation.embed(
        plan,
        embed_stage=embed_stage,
        storage=storage,
        actors=actors,
        read_cpus=read_cpus,
        prepare_cpus=prepare_cpus,
        read_batch=read_batch,
        dtype=dtype,
    )


@task(name="fit-scorer", **_task)
def fit_task(plan: curation.Plan, config: ScorerConfig, *, train_pool_samples: int) -> tuple[Scorer, dict[str, Any]]:
    return curation.fit(plan, config, train_pool_samples=train_pool_samples)


@task(name="score-select-write", retries=2, retry_delay_seconds=5, **_task)
def score_select_write_task(
    plan: curation.Plan,
    scorer: Scorer,
    uri: str,
    sidecar: dict[str, Any],
    *,
    k: int | None,
    fraction: float | None,
    selection: SelectionConfig,
    per_source_cap: dict[str, int] | None,
    options: DistributedSelection,
) -> dict[str, Any]:
    return curation.score_select_write(plan, scorer, uri, sidecar, k=k, fraction=fraction, selection=selection,
                                       per_source_cap=per_source_cap, options=options)


@task(name="report", retries=2, retry_delay_seconds=5, **_task)
def report_task(
    manifest_uri: str, storage: StorageConfig | None, *, per_set: int, seed: int = 0,
    on_step: Callable[[str, int, int], None] | None = None,
) -> build.ReportResult:
    return build.build_report(manifest_uri, storage, per_set=per_set, seed=seed, on_step=on_step)
