"""The curation steps, as plain functions: usable without Prefect (``tasks/prefect_tasks.py`` wraps each one as a
Prefect task of the same name, suffixed ``_task``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import BotoCoreError

from core.contracts import ERRORS
from core.location import Location
from core.read import Quarantine, list_shards_or_quarantine, source_root
from core.settings import SourceSpec, StorageConfig
from core.storage import relative_name, storage_error
from estimator.backbones import validate_backbone_spec
from estimator.backbones.fingerprint import BackboneInfo, describe
from estimator.backbones.spec import BackboneSpec
from estimator.features import feature_parts
from estimator.probe import load_estimator
from estimator.scorer import Scorer, ScorerConfig, fit_scorer
from tasks import distributed_select
from tasks.cache import CacheEntry, EmbeddingCache, EntryCounts, threaded
from tasks.embed import Embed
from tasks.embed_shards import EmbedSummary, ShardJob, embed_shards
from tasks.filter_passes import VectorFilters, vector_filters
from tasks.filters.dedup import DedupConfig
from tasks.filters.quality import QualityConfig
from tasks.filters.screen import ScreenPlan
from tasks.fit_memo import fit_location, kept_fit
from tasks.progress import Progress
from tasks.ray_config import RayConfig
from tasks.score import CachedShard, load_features
from tasks.select import SelectionConfig
from tasks.source_checks import refuse_robot_data_in_pool, refuse_shared_shards


@dataclass
class Plan:
    """What a run will do: every shard, where its embeddings live and which still need embedding."""

    backbone: BackboneInfo
    cache: EmbeddingCache
    pool: list[CachedShard]
    robot: list[CachedShard]
    todo: list[ShardJob]
    listing_errors: pa.Table
    screen: ScreenPlan | None = None  # blocklists and batch thresholds the pool's shards pass before the model
    vector_filters: VectorFilters | None = None  # CLIP score, probes and dedup: passes of the selection engine


def _look_up(cache: EmbeddingCache, spec: SourceSpec, screen_key: str | None,
             shard_uri: str) -> tuple[CacheEntry | None, EntryCounts | None]:
    """A shard's cache entry (screened by ``screen_key``'s filters) and its counts (None: not embedded yet); no
    entry for a shard that is gone."""
    try:
        entry = cache.entry(spec, shard_uri, screen_key)
    except FileNotFoundError:
        return None, None
    return entry, entry.counts()


def preflight(
    *,
    pool: list[SourceSpec],
    robot: list[SourceSpec],
    backbone_spec: BackboneSpec,
    scorer_config: ScorerConfig,
    cache_at: Location,
    storage: StorageConfig | None,
    allow_empty_sources: bool = False,
    actor_gpus: float = 0.0,
    screen: ScreenPlan | None = None,
    quality: QualityConfig | None = None,
    dedup: DedupConfig | None = None,
) -> Plan:
    """Check everything that can be checked before work starts and plan the embedding job.

    Raises ``ValueError`` for an unknown backbone, a source with no readable shard (naming its field, e.g.
    ``pool.2.uri``, unless ``allow_empty_sources``), a robot set with no data, or an estimator made for another
    backbone or dimension; a LeRobot dataset in the pool, or two sources over the same shards (naming the field).
    A source whose storage fails (denied, unreachable, missing bucket) is a ``StorageAccessError`` naming its field.
    Loads no model: the fingerprint that keys the cache comes from the backbone's files, for the dtype workers
    with ``actor_gpus`` will run in. ``screen``: the filters the pool's shards are read through (their entries are
    keyed by it; the robot sets' never are). ``quality``/``dedup``: the thresholds on cached vectors (a CLIP
    score on a backbone without both towers, or a probe of another width, is refused here).
    """
    validate_backbone_spec(backbone_spec, storage)
    refuse_robot_data_in_pool(pool)
    backbone = describe(backbone_spec, storage, gpu=actor_gpus > 0)
    if scorer_config.method == "estimator" and scorer_config.estimator_uri:
        load_estimator(
            Location(scorer_config.estimator_uri, storage), expect_fingerprint=backbone.fingerprint,
            expect_dim=backbone.embed_dim,
        )
    cache = EmbeddingCache(root=cache_at, fingerprint=backbone.fingerprint)
    parts = feature_parts(backbone.parts["kind"], backbone.parts["modality"], backbone.embed_dim)
    filters = vector_filters(quality or QualityConfig(), dedup or DedupConfig(), parts, backbone.embed_dim, storage)
    listing = Quarantine(stage="list")
    shards: dict[str, list[CachedShard]] = {"pool": [], "robot": []}
    todo: list[ShardJob] = []
    empty: list[str] = []
    listed: dict[str, list[str]] = {}
    for role, specs in (("pool", pool), ("robot", robot)):
        for index, spec in enumerate(specs):
            found = len(shards[role])
            try:
                listed[f"{role}.{index}.uri"] = list_shards_or_quarantine(spec, listing)
            except (OSError, BotoCoreError) as err:  # the storage's fault (the source's own is quarantined)
                raise storage_error(err, setting=f"{role}.{index}.uri", uri=spec.uri) from None
            uris = listed[f"{role}.{index}.uri"]
            screened = screen is not None and role == "pool"
            look_up = partial(_look_up, cache, spec, screen.key() if screened else None)
            # 3-5 storage requests a shard (tests/tasks/test_driver_requests.py), each a round trip on S3: in
            # flight together, or the driver spends S x 5 x latency here (hours at 2B samples: bench capacity)
            for shard_uri, (entry, counts) in zip(uris, threaded(look_up, uris), strict=True):
                if entry is None:
                    listing.add(shard_uri=shard_uri, reason="unreadable_shard", detail="shard not found")
                    continue
                shard = relative_name(source_root(spec), shard_uri)
                shards[role].append(CachedShard(source=spec.name, shard_uri=shard_uri, shard=shard, entry=entry,
                                                counts=counts))
                if counts is None:
                    todo.append(ShardJob(spec=spec, shard_uri=shard_uri, entry=entry, screened=screened))
            if len(shards[role]) == found:
                empty.append(f"{role}.{index}.uri: no readable shard at {spec.uri}")
    refuse_shared_shards(listed)
    if empty and not allow_empty_sources:
        raise ValueError("; ".join(empty) + " (set allow_empty_sources to run without such sources)")
    if not shards["robot"]:
        raise ValueError(
            f"the robot set is empty: no data found for {[s.name for s in robot]} ({dict(listing.counts)})"
        )
    if not shards["pool"]:
        raise ValueError(f"the pool is empty: no shards found for {[s.name for s in pool]} ({dict(listing.counts)})")
    return Plan(
        backbone=backbone,
        cache=cache,
        pool=shards["pool"],
        robot=shards["robot"],
        todo=todo,
        listing_errors=listing.table(),
        screen=screen,
        vector_filters=filters if filters.active else None,
    )


def counted(plan: Plan, embedded: EmbedSummary | None) -> Plan:
    """The plan with every shard's counts: the embedding workers' summary rows for the shards this run embedded,
    the preflight's for those cached before, so the driver reads nothing per shard after embedding."""
    fresh = {}
    if embedded is not None:
        for row in embedded.shards.filter(pc.is_null(embedded.shards["failed"])).to_pylist():
            fresh[row["shard_uri"]] = EntryCounts(rows=row["rows_embedded"], quarantined=json.loads(row["quarantined"]))

    def count(shard: CachedShard) -> CachedShard:
        if shard.counts is not None:
            return shard
        return replace(shard, counts=fresh.get(shard.shard_uri) or shard.entry.counts())

    return replace(plan, pool=[count(s) for s in plan.pool], robot=[count(s) for s in plan.robot])


def usable_rows(plan: Plan) -> dict[str, int]:
    """Vectors cached for each shard of a ``counted`` plan."""
    return {s.shard_uri: s.counts.rows if s.counts else 0 for s in plan.pool + plan.robot}


def gather_errors(plan: Plan) -> pa.Table:
    """Every quarantined row of the run: listing failures plus what the cache entries recorded, read only from the
    entries whose counts say they hold some (all of them for a plan not yet ``counted``)."""
    quarantined = [s for s in plan.pool + plan.robot if s.counts is None or s.counts.errors]
    parts = [plan.listing_errors] + [s.entry.read_errors(s.source) for s in quarantined]
    return pa.concat_tables([p.cast(ERRORS) for p in parts])


def embed(plan: Plan, *, embed_stage: Embed, config: RayConfig, dtype: str) -> EmbedSummary:
    """Embed every shard the plan has no cache entry for, on the current Ray cluster, sized by ``config`` (CPUs left
    None take the cluster's defaults, ``tasks.embed_shards.embed_cpus``: on CPUs only, most of them for the model,
    which decodes on a thread of its own)."""
    return embed_shards(plan.todo, embed=embed_stage, cache=plan.cache, config=config, dtype=dtype, screen=plan.screen)


def fit(plan: Plan, config: ScorerConfig, *, train_pool_samples: int) -> tuple[Scorer, dict[str, Any]]:
    """Train the scorer on every robot vector and a seeded uniform sample of the pool's.

    The pool here is the pool as read: what the read-time screen (blocklists, image and caption thresholds) removed
    was never embedded, so it is not in it; what the vector filters (CLIP score, probes, dedup) remove still is,
    as they run later, as passes of the selection engine. Fitting after them would put the engine's filter passes
    before the fit and make the estimator depend on every vector threshold, for a gain within noise: a few percent
    of the negatives change, and ``bench filters`` measures 0 to +2 of ~110 at K.

    A trained estimator is kept beside the cache (``tasks.fit_memo``): a re-run on the same vectors and settings
    loads it instead of fitting again."""
    info = plan.backbone
    parts = feature_parts(info.parts["kind"], info.parts["modality"], info.embed_dim)  # image/text columns
    kept = fit_location(plan.cache, plan.robot, plan.pool, config, train_pool_samples=train_pool_samples,
                        parts=parts)

    def fit_now() -> tuple[Scorer, dict[str, Any]]:
        # steps: every shard read for features, then the fit itself
        with Progress("fit", total=len(plan.robot) + len(plan.pool) + 1, unit="steps") as progress:
            robot = load_features(plan.robot, progress=progress)
            pool = load_features(
                plan.pool, max_rows=train_pool_samples, seed=config.estimator.seed, progress=progress
            )
            fitted = fit_scorer(config, robot, pool, backbone_fingerprint=info.fingerprint, parts=parts,
                                storage=plan.cache.root.storage)
            progress.update()
        return fitted

    return kept_fit(kept, fit_now, fingerprint=info.fingerprint, dim=info.embed_dim)


def score_select_write(
    plan: Plan,
    scorer: Scorer,
    uri: str,
    sidecar: dict[str, Any],
    *,
    k: int | None,
    fraction: float | None,
    selection: SelectionConfig,
    per_source_cap: dict[str, int] | None,
    options: distributed_select.DistributedSelection,
) -> dict[str, Any]:
    """Score every pool sample, choose the K (top-K or a seeded importance draw, within the per-source caps, past
    near-duplicates) and publish the manifest, as one job on the current Ray cluster (``tasks.distributed_select``:
    one worker on a laptop, many on a cluster, the same bytes). Returns the sidecar."""
    return distributed_select.score_select_write(
        cache=plan.cache, pool=plan.pool, scorer=scorer, manifest_uri=uri, sidecar=sidecar, k=k, fraction=fraction,
        selection=selection, per_source_cap=per_source_cap, options=options, filters=plan.vector_filters,
    )
