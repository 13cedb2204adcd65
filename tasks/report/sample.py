"""Seeded, bounded samples of embeddings for a curated run: per pool source, per robot source, the selected set
and the whole pool. Row positions are chosen first, then only the cache entries holding them are read, so the
cost depends on ``per_set`` and the shards touched, not on the size of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.manifest import read_sidecar
from core.settings import StorageConfig
from core.storage import arrow_filesystem
from tasks.cache import EmbeddingCache, vectors


@dataclass
class EmbeddingSets:
    """``sets`` maps a set name to its sampled vectors [n, d]; ``map_*`` are the points for the 2-D map (the pool
    sample, then every robot sample) with their source and whether each was selected."""

    sets: dict[str, np.ndarray]
    map_points: np.ndarray
    map_labels: list[str]
    map_selected: np.ndarray


def read_manifest_columns(
    manifest_uri: str, storage: StorageConfig | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """The manifest (only ``columns``) as a DataFrame."""
    fs, path = arrow_filesystem(manifest_uri, storage)
    return pq.read_table(path, filesystem=fs, columns=columns).to_pandas()


def _pick(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, k, replace=False)) if n > k else np.arange(n)


def _pool_vectors(
    manifest: pd.DataFrame, wanted: np.ndarray, cache: EmbeddingCache, entries: dict[str, str]
) -> dict[str, np.ndarray]:
    """Vectors by sample_id for the manifest rows at ``wanted``, reading the run's cache entry (``entries``, by
    shard URI) of each shard involved (entries hold keys; the manifest maps them to the run's sample ids)."""
    rows = manifest.iloc[np.unique(wanted)]
    found: dict[str, np.ndarray] = {}
    for shard_uri, group in rows.groupby("shard_uri", sort=True):
        entry = entries.get(str(shard_uri))
        if entry is None or not cache.has(entry):
            continue
        ids = dict(zip(group["key"].astype(str), group["sample_id"].astype(str), strict=True))
        table = cache.read(entry, columns=["key", "embedding"])
        table = table.filter(pc.is_in(table["key"], value_set=pa.array(list(ids), pa.string())))
        found.update(zip([ids[k] for k in table["key"].to_pylist()], vectors(table), strict=True))
    return found


def _robot_vectors(entries: list[str], cache: EmbeddingCache, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` vectors drawn uniformly from every frame in a robot source's cache ``entries`` (row counts from
    Parquet footers)."""
    entries = [e for e in entries if cache.has(e)]
    counts = []
    for entry in entries:
        fs, path = arrow_filesystem(entry + ".parquet", cache.storage)
        with fs.open_input_file(path) as f:
            counts.append(pq.ParquetFile(f).metadata.num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    chosen = _pick(int(offsets[-1]), k, rng)
    parts = []
    for i, entry in enumerate(entries):
        local = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i]
        if len(local):
            parts.append(vectors(cache.read(entry, columns=["embedding"]).take(local)))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def load_sets(
    manifest_uri: str, storage: StorageConfig | None = None, *, per_set: int = 500, seed: int = 0
) -> EmbeddingSets:
    """Sample at most ``per_set`` embeddings (seeded, uniform) for each pool source, each robot source,
    ``selected`` and ``pool``."""
    sidecar = read_sidecar(manifest_uri, storage)
    cache = EmbeddingCache(root=sidecar["cache_uri"], fingerprint=sidecar["backbone_fingerprint"], storage=storage)
    manifest = read_manifest_columns(manifest_uri, storage, ["sample_id", "source", "shard_uri", "key", "selected"])
    rng = np.random.default_rng(seed)
    picks: dict[str, np.ndarray] = {}
    for source, idx in manifest.groupby("source", sort=True).indices.items():
        picks[str(source)] = idx[_pick(len(idx), per_set, rng)]
    selected_idx = np.flatnonzero(manifest["selected"].to_numpy())
    picks["selected"] = selected_idx[_pick(len(selected_idx), per_set, rng)]
    picks["pool"] = _pick(len(manifest), per_set, rng)
    entries = sidecar["cache_entries"]  # as the run's plan found them: the sources are not listed again
    found = _pool_vectors(manifest, np.concatenate(list(picks.values())), cache, entries["pool"])
    ids = manifest["sample_id"].to_numpy()

    def stack(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = np.array([ids[i] in found for i in idx], bool)
        idx = idx[keep] if len(idx) else idx
        dim = len(next(iter(found.values()))) if found else 0
        return (np.stack([found[ids[i]] for i in idx]) if len(idx) else np.zeros((0, dim), np.float32)), idx

    sets = {name: stack(idx)[0] for name, idx in picks.items()}
    pool_vecs, pool_idx = stack(picks["pool"])
    labels = manifest["source"].to_numpy()[pool_idx].astype(str).tolist()
    flags = manifest["selected"].to_numpy()[pool_idx].astype(bool)
    points = [pool_vecs]
    for name in (s["name"] for s in sidecar.get("robot", [])):
        robot = _robot_vectors(entries["robot"].get(name, []), cache, per_set, rng)
        if len(robot):
            sets[name] = robot
            points.append(robot)
            labels += [name] * len(robot)
            flags = np.concatenate([flags, np.zeros(len(robot), bool)])
    return EmbeddingSets(sets=sets, map_points=np.concatenate(points), map_labels=labels, map_selected=flags)
