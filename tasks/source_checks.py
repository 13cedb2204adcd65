"""Source configurations that cannot give a meaningful run, refused at preflight with the field to fix.

The cache is keyed by what is read, not by the source's name, so two sources over the same shards would embed
them once and put every sample into the run twice (duplicate sample ids), and a robot dataset in the pool would
be selected as "closest to robot data" by construction.
"""

from __future__ import annotations

from core.read.formats import FORMATS
from core.settings import SourceSpec


def refuse_robot_data_in_pool(pool: list[SourceSpec]) -> None:
    """Raise ValueError naming ``pool.N.format`` when a pool source is a LeRobot dataset."""
    for index, spec in enumerate(pool):
        if FORMATS[spec.format].robot:
            raise ValueError(
                f"pool.{index}.format: {spec.name!r} is a LeRobot dataset ({spec.uri}); robot data is the target, "
                "not part of the pool to curate: list it under robot"
            )


def refuse_shared_shards(listed: dict[str, list[str]]) -> None:
    """Raise ValueError naming both fields when two sources (``{"pool.0.uri": shard URIs, ...}``) share a shard,
    e.g. the same URI twice, or a pool source over a robot dataset's files."""
    owner: dict[str, str] = {}
    for where, shards in listed.items():
        for shard in shards:
            if (first := owner.setdefault(shard, where)) != where:
                raise ValueError(
                    f"{where}: resolves to shards that {first} already reads (e.g. {shard}); every sample would "
                    "be in the run twice: give each shard to one source only"
                )
