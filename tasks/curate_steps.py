"""The curation steps between reading and the manifest, as plain functions (the flow wraps them as tasks)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from estimator.backbones import load_backbone, validate_backbone_spec
from estimator.backbones.base import Backbone
from estimator.probe import load_estimator
from tasks.cache import EmbeddingCache
from tasks.config import SourceSpec, StorageConfig
from tasks.contracts import ERRORS
from tasks.embed_shards import ShardJob
from tasks.read import Quarantine, list_shards_or_quarantine
from tasks.score import CachedShard


@dataclass
class Plan:
    """What a run will do: every shard, where its embeddings live and which still need embedding."""

    backbone: Backbone
    cache: EmbeddingCache
    pool: list[CachedShard]
    robot: list[CachedShard]
    todo: list[ShardJob]
    listing_errors: pa.Table


def preflight(
    *,
    pool: list[SourceSpec],
    robot: list[SourceSpec],
    backbone_spec,
    scorer_config,
    cache_uri: str,
    storage: StorageConfig | None,
) -> Plan:
    """Check everything that can be checked before work starts and plan the embedding job.

    Raises ``ValueError`` for an unknown backbone, a robot set with no data, or an estimator made for another
    backbone or dimension. Loads the backbone once here: its fingerprint keys the cache.
    """
    validate_backbone_spec(backbone_spec, storage)
    backbone = load_backbone(backbone_spec, storage)
    if scorer_config.method == "estimator" and scorer_config.estimator_uri:
        load_estimator(
            scorer_config.estimator_uri, storage, expect_fingerprint=backbone.fingerprint, expect_dim=backbone.embed_dim
        )
    cache = EmbeddingCache(root=cache_uri, fingerprint=backbone.fingerprint, storage=storage)
    listing = Quarantine(stage="list")
    shards: dict[str, list[CachedShard]] = {"pool": [], "robot": []}
    todo: list[ShardJob] = []
    for role, specs in (("pool", pool), ("robot", robot)):
        for spec in specs:
            for shard_uri in list_shards_or_quarantine(spec, storage, listing):
                try:
                    entry = cache.entry(shard_uri)
                except FileNotFoundError:
                    listing.add(shard_uri=shard_uri, reason="unreadable_shard", detail="shard not found")
                    continue
                shards[role].append(CachedShard(source=spec.name, shard_uri=shard_uri, entry=entry))
                if not cache.has(entry):
                    todo.append(ShardJob(spec=spec, shard_uri=shard_uri, entry=entry))
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
    )


def gather_errors(plan: Plan) -> pa.Table:
    """Every quarantined row of the run: listing failures plus what each shard's cache entry recorded."""
    parts = [plan.listing_errors] + [plan.cache.read_errors(s.entry) for s in plan.pool + plan.robot]
    return pa.concat_tables([p.cast(ERRORS) for p in parts])
