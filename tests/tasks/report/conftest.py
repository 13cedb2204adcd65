"""A tiny fake run for the report's tests: a real synthetic corpus, cache entries with shifted random vectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.contracts import ERRORS
from core.location import Location
from core.manifest import write_manifest
from core.read import Quarantine, list_shards, read_shard
from synth import CorpusInfo
from tasks.cache import EmbeddingCache

DIM = 16


@pytest.fixture(scope="module")
def fake_run(local_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("run")
    cache = EmbeddingCache(root=Location(str(root / "embeddings")), fingerprint="fake-fp")
    rng = np.random.default_rng(0)
    parts = []
    entries: dict = {"pool": {}, "robot": {}}  # what the run's plan records in the sidecar
    specs = [(s, "pool") for s in local_corpus.pool] + [(s, "robot") for s in local_corpus.robot]
    for offset, (spec, role) in enumerate(specs):
        for shard in list_shards(spec):
            batches = list(read_shard(spec, shard, quarantine=Quarantine()))
            ids = [i for b in batches for i in b["sample_id"].to_pylist()]
            keys = [k for b in batches for k in b["key"].to_pylist()]
            vecs = rng.normal(offset * 0.5, 1.0, size=(len(ids), DIM)).astype(np.float32)
            emb = pa.table(
                {
                    "sample_id": ids,
                    "source": [spec.name] * len(ids),
                    "key": keys,
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), DIM),
                }
            )
            entry = cache.entry(spec, shard)
            cache.write(entry, shard, emb, ERRORS.empty_table(), "float32")
            if role == "robot":
                entries["robot"].setdefault(spec.name, []).append(entry.uri)
            else:
                entries["pool"][shard] = entry.uri
            if role == "pool":
                scores = rng.normal(size=len(ids)).astype(np.float32) + offset
                parts.append((ids, spec.name, shard, keys, scores))
    ids = [i for p in parts for i in p[0]]
    scores = np.concatenate([p[4] for p in parts])
    rank = np.empty(len(ids), np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(len(ids))
    table = pa.table(
        {
            "sample_id": ids,
            "source": [p[1] for p in parts for _ in p[0]],
            "shard_uri": [p[2] for p in parts for _ in p[0]],
            "key": [k for p in parts for k in p[3]],
            "score": scores,
            "rank": rank,
            "selected": rank < 20,
        }
    )
    manifest_uri = str(root / "manifest.parquet")
    sidecar = {
        "run_id": "test-run",
        "backbone": "fake",
        "backbone_fingerprint": "fake-fp",
        "cache_uri": str(root / "embeddings"),
        "cache_entries": entries,
        "k": 20,
        "embed_dim": DIM,
        "scorer": {"method": "probe", "n_robot": 36, "trained": {"val_accuracy": 0.91234}},
        "pool": [s.model_dump(mode="json") for s in local_corpus.pool],
        "robot": [s.model_dump(mode="json") for s in local_corpus.robot],
        "quarantined": 0,
    }
    write_manifest(manifest_uri, [table], sidecar)
    return manifest_uri
