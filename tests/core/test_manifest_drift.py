"""Data that moved on after its manifest was written: a deleted shard and a rewritten one. ``iter_selected`` gives
the intact samples and quarantines every selected sample of those shards with its reason, never raising."""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.manifest import iter_selected, modified, sidecar_uri, write_manifest
from core.read import Quarantine, read_source


def _copy(corpus, root: str) -> list:
    """The first two pool sources (a WebDataset one, a Parquet one) copied under ``root``."""
    shutil.copytree(corpus.root, root)
    return [s.model_copy(update={"uri": s.uri.replace(corpus.root.rstrip("/"), root)}) for s in corpus.pool[1:3]]


@pytest.mark.parametrize("with_locations", [True, False])
def test_a_deleted_and_a_rewritten_shard_are_quarantined_per_selected_sample(local_corpus, tmp_path, with_locations):
    specs = _copy(local_corpus, str(tmp_path / "corpus"))
    parts = []
    for spec in specs:
        samples = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
        n = samples.num_rows
        columns = ["sample_id", "source", "shard_uri", "key"]
        part = samples.select(columns + (["byte_offset", "byte_length", "row_group"] if with_locations else []))
        parts.append(part.append_column("score", pa.array([1.0 - i / n for i in range(n)], pa.float32()))
                     .append_column("rank", pa.array(range(n), pa.int64()))
                     .append_column("selected", pa.array([i % 3 == 0 for i in range(n)])))
    uri = str(tmp_path / "m" / "manifest.parquet")
    write_manifest(uri, parts, {"pool": [s.model_dump(mode="json") for s in specs]})
    chosen = pa.concat_tables(parts).filter(pc.field("selected"))
    deleted = chosen["shard_uri"][0].as_py()  # a tar
    rewritten = chosen.filter(pc.equal(chosen["source"], specs[1].name))["shard_uri"][0].as_py()  # a Parquet file
    os.remove(deleted)
    pq.write_table(pq.read_table(rewritten), rewritten)  # the same rows, but written after the manifest
    later = modified(sidecar_uri(uri)) + 5
    os.utime(rewritten, (later, later))

    quarantine = Quarantine()
    got = pa.concat_tables(iter_selected(uri, batch_size=4, quarantine=quarantine))
    lost = {"missing_shard": deleted, "changed_shard": rewritten}
    for reason, shard in lost.items():
        ids = chosen.filter(pc.equal(chosen["shard_uri"], shard))["sample_id"].to_pylist()
        rows = [r for r in quarantine.rows if r["reason"] == reason]
        assert sorted(r["sample_id"] for r in rows) == sorted(ids) and {r["shard_uri"] for r in rows} == {shard}
    assert dict(quarantine.counts) == {r: sum(1 for s in chosen["shard_uri"].to_pylist() if s == shard)
                                       for r, shard in lost.items()}
    intact = chosen.filter(pc.invert(pc.is_in(chosen["shard_uri"], pa.array(list(lost.values())))))
    assert sorted(got["sample_id"].to_pylist()) == sorted(intact["sample_id"].to_pylist())


def test_a_shard_that_no_longer_holds_a_selected_sample_says_so(local_corpus, tmp_path):
    spec = _copy(local_corpus, str(tmp_path / "corpus"))[1]  # Parquet, read whole (no locations)
    samples = pa.concat_tables(read_source(spec, quarantine=Quarantine()))
    n = samples.num_rows
    part = (samples.select(["sample_id", "source", "shard_uri", "key"])
            .append_column("score", pa.array([1.0] * n, pa.float32())).append_column("rank", pa.array(range(n)))
            .append_column("selected", pa.array([True] * n)))
    shard = samples["shard_uri"][0].as_py()
    table = pq.read_table(shard)
    uri = str(tmp_path / "m" / "manifest.parquet")
    write_manifest(uri, [part], {"pool": [spec.model_dump(mode="json")]})
    earlier = modified(sidecar_uri(uri)) - 5  # rewritten shorter, with a time that does not give it away
    pq.write_table(table.slice(0, 2), shard)
    os.utime(shard, (earlier, earlier))
    quarantine = Quarantine()
    got = sum(t.num_rows for t in iter_selected(uri, quarantine=quarantine))
    in_shard = sum(1 for s in samples["shard_uri"].to_pylist() if s == shard)
    assert dict(quarantine.counts) == {"changed_shard": in_shard - 2} and got == n - (in_shard - 2)
