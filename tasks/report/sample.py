"""Seeded, bounded samples of embeddings for a curated run: per pool source, per robot source, the selected set
and the whole pool. The pool's rows are chosen in one pass over the manifest (``scan_manifest``) and the robot's
from the entries' footers, as block samples (``tasks.block_sample``) that touch a bounded number of cache row
groups; only those row groups are read. So the cost depends on ``per_set``, not on the size of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.location import Location
from core.manifest import read_sidecar
from core.settings import StorageConfig
from tasks import block_sample
from tasks.cache import CacheEntry, EmbeddingCache, entry_row_counts, threaded
from tasks.report.scan import MIN_BLOCKS, ManifestScan, scan_manifest


@dataclass
class EmbeddingSets:
    """``sets`` maps a set name to its sampled vectors [n, d]; ``map_*`` are the points for the 2-D map (the pool
    sample, then every robot sample) with their source and whether each was selected."""

    sets: dict[str, np.ndarray]
    map_points: np.ndarray
    map_labels: list[str]
    map_selected: np.ndarray


def _pool_vectors(scan: ManifestScan, entries: dict[str, CacheEntry]) -> dict[int, np.ndarray]:
    """Vectors by pool position for every sampled row, read from the row groups of the run's cache entries
    (``entries``, by shard URI) that hold them. A shard whose entry is gone, or no longer has the manifest's rows,
    is left out."""
    rows = {}
    for sample in scan.samples.values():
        where = zip(sample["shard"].tolist(), sample["row"].tolist(), strict=True)
        rows.update(zip(sample["position"].tolist(), where, strict=True))
    by_shard: dict[int, list[tuple[int, int]]] = {}
    for position, (shard, row) in sorted(rows.items()):
        by_shard.setdefault(shard, []).append((row, position))

    def read(shard: int) -> dict[int, np.ndarray]:
        entry, wanted = entries.get(scan.shard_uris[shard]), by_shard[shard]
        if entry is None or not entry.exists():
            return {}
        try:
            found = entry.read_vectors(np.array([r for r, _ in wanted]))
        except IndexError:
            return {}
        return dict(zip([p for _, p in wanted], found, strict=True))

    found: dict[int, np.ndarray] = {}
    for part in threaded(read, list(by_shard)):
        found.update(part)
    return found


def _robot_vectors(entries: list[CacheEntry], k: int, seed: int, name: str) -> np.ndarray:
    """Up to ``k`` vectors, a block sample of every frame in a robot source's cache ``entries``."""
    entries = [e for e in entries if e.exists()]
    sizes = entry_row_counts(entries)
    key = block_sample.salt(seed, f"robot/{name}")
    chosen = block_sample.sample_positions(sizes, k, min_blocks=MIN_BLOCKS, key=key)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def read(i: int) -> np.ndarray | None:
        local = chosen[np.searchsorted(chosen, offsets[i]) : np.searchsorted(chosen, offsets[i + 1])] - offsets[i]
        return entries[i].read_vectors(local) if len(local) else None

    parts = [x for x in threaded(read, list(range(len(entries)))) if x is not None]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def load_sets(
    manifest_uri: str,
    storage: StorageConfig | None = None,
    *,
    per_set: int = 500,
    seed: int = 0,
    scan: ManifestScan | None = None,
) -> EmbeddingSets:
    """Sample at most ``per_set`` embeddings (seeded) for each pool source, each robot source, ``selected`` and
    ``pool``; ``scan`` is the manifest's (``scan_manifest`` with the same ``per_set`` and ``seed``) when the caller
    already made it."""
    sidecar = read_sidecar(manifest_uri, storage)
    cache = EmbeddingCache(root=Location(sidecar["cache_uri"], storage), fingerprint=sidecar["backbone_fingerprint"])
    scan = scan or scan_manifest(manifest_uri, storage, per_set=per_set, seed=seed, examples=0)
    entries = sidecar["cache_entries"]  # as the run's plan found them: the sources are not listed again
    found = _pool_vectors(scan, {uri: cache.at(e) for uri, e in entries["pool"].items()})
    dim = len(next(iter(found.values()))) if found else 0

    def stack(sample: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        keep = np.array([p in found for p in sample["position"].tolist()], bool)
        rows = [found[p] for p in sample["position"][keep].tolist()]
        return (np.stack(rows) if rows else np.zeros((0, dim), np.float32)), keep

    empty = {"position": np.zeros(0, np.int64), "source": np.zeros(0, np.int64), "selected": np.zeros(0, bool)}
    names = sorted(scan.scores.sources) + ["selected", "pool"]
    sets = {name: stack(scan.samples.get(name, empty))[0] for name in names}
    pool = scan.samples.get("pool", empty)
    pool_vecs, kept = stack(pool)
    labels = [scan.scores.sources[c] for c in pool["source"][kept]]
    flags = pool["selected"][kept].astype(bool)
    points = [pool_vecs]
    for name in (s["name"] for s in sidecar.get("robot", [])):
        robot = _robot_vectors([cache.at(e) for e in entries["robot"].get(name, [])], per_set, seed, name)
        if len(robot):
            sets[name] = robot
            points.append(robot)
            labels += [name] * len(robot)
            flags = np.concatenate([flags, np.zeros(len(robot), bool)])
    return EmbeddingSets(sets=sets, map_points=np.concatenate(points), map_labels=labels, map_selected=flags)
