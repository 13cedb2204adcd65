"""Mid-training on a manifest older than its data: the selected samples of a deleted shard and of a rewritten one
are skipped and counted by reason (result, tracker), the run finishes, and nothing is left running."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.manifest import modified, sidecar_uri, write_manifest
from core.read import Quarantine, read_source
from synth import CorpusInfo
from training.config import MidtrainConfig, TrainConfig
from training.metrics import MemoryTracker
from training.recipes import midtrain


def _stale_manifest(corpus: CorpusInfo, root: str) -> tuple[str, int, dict[str, int]]:
    """A located manifest over a copy of the pool (every third sample selected); then one selected tar shard is
    deleted and one selected Parquet shard rewritten. Returns the URI, the selected count and the samples lost."""
    shutil.copytree(corpus.root, f"{root}/corpus")
    specs = [s.model_copy(update={"uri": s.uri.replace(corpus.root.rstrip("/"), f"{root}/corpus")})
             for s in corpus.pool]
    parts = []
    for spec in specs:
        samples = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        n = samples.num_rows
        parts.append(samples.select(["sample_id", "source", "shard_uri", "key", "byte_offset", "byte_length",
                                     "row_group"])
                     .append_column("score", pa.array([1.0 - i / n for i in range(n)], pa.float32()))
                     .append_column("rank", pa.array(range(n), pa.int64()))
                     .append_column("selected", pa.array([i % 3 == 0 for i in range(n)])))
    uri = f"{root}/manifest/manifest.parquet"
    write_manifest(uri, parts, {"run_id": "stale", "pool": [s.model_dump(mode="json") for s in specs]})
    chosen = pa.concat_tables(parts).filter(pc.field("selected"))
    formats = {s.name: s.format for s in specs}
    tar = next(u for u, s in zip(chosen["shard_uri"].to_pylist(), chosen["source"].to_pylist(), strict=True)
               if formats[s] == "webdataset")
    parquet = next(u for u, s in zip(chosen["shard_uri"].to_pylist(), chosen["source"].to_pylist(), strict=True)
                   if formats[s] == "parquet")
    os.remove(tar)
    pq.write_table(pq.read_table(parquet), parquet)
    later = modified(sidecar_uri(uri)) + 5
    os.utime(parquet, (later, later))
    lost = {"missing_shard": tar, "changed_shard": parquet}
    return uri, chosen.num_rows, {r: chosen["shard_uri"].to_pylist().count(shard) for r, shard in lost.items()}


def test_a_deleted_and_a_rewritten_shard_are_skipped_and_counted(tiny_vlm: str, local_corpus: CorpusInfo,
                                                                  tmp_path):
    uri, selected, lost = _stale_manifest(local_corpus, str(tmp_path))
    assert all(lost.values())
    usable = selected - sum(lost.values())  # a batch of exactly one epoch: each step reads the manifest once
    tracker = MemoryTracker()
    threads = set(threading.enumerate())
    started = time.perf_counter()
    train = TrainConfig(steps=2, lr=1e-3, batch_size=usable, shuffle_buffer=8, log_every=1, num_workers=2)
    result = midtrain(MidtrainConfig(model=tiny_vlm, manifest_uri=uri, output_uri=str(tmp_path / "out"),
                                     train=train), tracker)
    assert result.steps == 2
    assert result.samples == 2 * usable
    assert result.skipped == {k: 2 * v for k, v in lost.items()}  # per sample, once in each epoch
    assert {k: v for k, v in tracker.metrics[-1][1].items() if k.startswith("skipped/")} == \
        {f"skipped/{k}": float(v) for k, v in result.skipped.items()}
    assert result.summary()["skipped/missing_shard"] == 2 * lost["missing_shard"]
    assert time.perf_counter() - started < 120
    time.sleep(0.5)
    assert {t.name for t in set(threading.enumerate()) - threads if t.is_alive()} == set()  # loader threads gone
