"""Thin Prefect task wrappers around the curation steps (retries on storage I/O only; no data logic here)."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from estimator.scorer import ScorerConfig, fit_scorer
from tasks import curate_steps, embed_shards, manifest, score, select
from tasks.embed import Embed
from tasks.report import build
from tasks.score import PoolScores

# Inputs are models and arrays: hashing them for Prefect's result cache would cost more than the step.
_task = {"cache_policy": NONE}


@task(name="preflight", **_task)
def preflight(**kwargs: Any) -> curate_steps.Plan:
    return curate_steps.preflight(**kwargs)


@task(name="embed", **_task)
def embed(plan: curate_steps.Plan, *, embed_stage: Embed, **kwargs: Any) -> embed_shards.EmbedSummary:
    return embed_shards.embed_shards(plan.todo, embed=embed_stage, cache=plan.cache, **kwargs)


@task(name="fit-scorer", **_task)
def fit(plan: curate_steps.Plan, config: ScorerConfig, *, train_pool_samples: int) -> tuple[Any, dict]:
    robot = score.load_features(plan.cache, plan.robot)
    pool = score.load_features(plan.cache, plan.pool, max_rows=train_pool_samples, seed=config.estimator.seed)
    scorer, metrics = fit_scorer(
        config, robot, pool, backbone_fingerprint=plan.backbone.fingerprint, storage=plan.cache.storage
    )
    return scorer, metrics


@task(name="score-pool", **_task)
def score_pool(plan: curate_steps.Plan, scorer: Any) -> PoolScores:
    return score.score_pool(plan.cache, plan.pool, scorer)


@task(name="select", **_task)
def choose(
    scores: PoolScores, *, k: int | None, fraction: float | None, per_source_cap: dict[str, int] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    n = select.resolve_k(len(scores.scores), k=k, fraction=fraction)
    order = select.rank_order(scores.scores)
    caps = {scores.sources.index(s): c for s, c in (per_source_cap or {}).items() if s in scores.sources}
    chosen = select.select_top(order, n, scores.source_codes, caps)
    return select.ranks_from_order(order), chosen, n


@task(name="write-manifest", retries=2, retry_delay_seconds=5, **_task)
def write_manifest(
    plan: curate_steps.Plan, uri: str, scores: PoolScores, ranks: np.ndarray, chosen: np.ndarray, sidecar: dict
) -> dict:
    parts = score.manifest_parts(plan.cache, plan.pool, scores.scores, ranks, chosen)
    return manifest.write_manifest(uri, parts, sidecar, plan.cache.storage)


@task(name="report", retries=2, retry_delay_seconds=5, **_task)
def report(manifest_uri: str, storage, *, per_set: int, seed: int = 0) -> build.ReportResult:
    return build.build_report(manifest_uri, storage, per_set=per_set, seed=seed)
