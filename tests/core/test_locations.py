"""Sample locations: a range read at the recorded location gives the sample back, and ``iter_selected`` uses them."""

from __future__ import annotations

import io
import os
import tarfile

import fsspec.implementations.local as local_fs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import core.manifest
from core.manifest import iter_selected, read_manifest, read_sidecar, write_manifest
from core.read import Quarantine, read_located, read_source
from core.settings import SourceSpec
from core.storage import iter_ranges


def _samples(spec: SourceSpec) -> pa.Table:
    return pa.concat_tables(read_source(spec, quarantine=Quarantine()))


def test_a_tar_span_alone_is_the_samples_members(local_corpus):
    spec = local_corpus.pool[0]
    assert spec.format == "webdataset"
    table = _samples(spec)
    for row in table.take([0, 7, 13]).to_pylist():
        with open(row["shard_uri"], "rb") as f:
            f.seek(row["byte_offset"])
            span = f.read(row["byte_length"])
        assert row["byte_offset"] % 512 == 0 and row["byte_length"] % 512 == 0  # whole tar blocks
        with tarfile.open(fileobj=io.BytesIO(span), mode="r|") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        assert {name.split(".")[0] for name in members} == {row["key"]}
        assert row["image"] in members.values() and members[f"{row['key']}.txt"].decode() == row["text"]


def test_a_parquet_row_group_holds_the_row(local_corpus, tmp_path):
    spec = local_corpus.pool[2]
    assert spec.format == "parquet"
    shard = _samples(spec)["shard_uri"][0].as_py()
    regrouped = tmp_path / "docs" / "00000.parquet"  # the same rows, in row groups of 3
    regrouped.parent.mkdir()
    pq.write_table(pq.read_table(shard), regrouped, row_group_size=3)
    table = _samples(spec.model_copy(update={"uri": str(regrouped)}))
    assert table["row_group"].to_pylist() == [int(k) // 3 for k in table["key"].to_pylist()]
    pf = pq.ParquetFile(regrouped)
    for row in table.take([0, 4, 8]).to_pylist():
        group = pf.read_row_group(row["row_group"])
        inside = group.slice(int(row["key"]) - 3 * row["row_group"], 1).to_pylist()[0]
        assert inside["image"] == row["image"] and inside["text"] == row["text"]


@pytest.mark.parametrize("index", [0, 2])  # a WebDataset source, a Parquet one
def test_a_changed_shard_quarantines_stale_locations(local_corpus, tmp_path, index):
    spec = local_corpus.pool[index]
    table = _samples(spec)
    shard = table["shard_uri"][0].as_py()
    rows = table.filter(pc.equal(table["shard_uri"], shard)).slice(1, 2)
    moved = rows.set_column(rows.schema.get_field_index("byte_offset"), "byte_offset", pa.array([0, 0], pa.int64()))
    moved = moved.set_column(moved.schema.get_field_index("row_group"), "row_group", pa.array([0, 5], pa.int32()))
    quarantine = Quarantine()
    got = list(read_located(spec, shard, moved, quarantine=quarantine))
    assert quarantine.counts["stale_location"] == (2 if index == 0 else 1)
    assert sum(t.num_rows for t in got) == (0 if index == 0 else 1)


def _manifest(corpus, uri: str, *, with_locations: bool) -> pa.Table:
    """Every pool sample, every fourth one selected, over a tar and a Parquet source."""
    parts = []
    for spec in corpus.pool[1:3]:
        samples = _samples(spec)
        n = samples.num_rows
        part = samples.select(["sample_id", "source", "shard_uri", "key", "byte_offset", "byte_length", "row_group"])
        parts.append(
            (part if with_locations else part.select(["sample_id", "source", "shard_uri", "key"]))
            .append_column("score", pa.array([1.0 - i / n for i in range(n)], pa.float32()))
            .append_column("rank", pa.array(range(n), pa.int64()))
            .append_column("selected", pa.array([i % 4 == 1 for i in range(n)]))
        )
    write_manifest(uri, parts, {"pool": [s.model_dump(mode="json") for s in corpus.pool]})
    return read_manifest(uri)


def test_iter_selected_reads_only_the_selected_spans(local_corpus, tmp_path, monkeypatch):
    whole = tmp_path / "old" / "manifest.parquet"
    located = tmp_path / "new" / "manifest.parquet"
    old_rows = _manifest(local_corpus, str(whole), with_locations=False)
    new_rows = _manifest(local_corpus, str(located), with_locations=True)
    assert old_rows["byte_offset"].null_count == old_rows.num_rows  # read as null, as a manifest from before them
    assert read_sidecar(str(whole))["content_sha256"] == read_sidecar(str(located))["content_sha256"]
    assert new_rows.drop_columns(["byte_offset", "byte_length", "row_group"]).equals(
        old_rows.drop_columns(["byte_offset", "byte_length", "row_group"])
    )
    expected = pa.concat_tables(iter_selected(str(whole), batch_size=4))

    requested = []
    real = local_fs.LocalFileSystem.cat_ranges
    monkeypatch.setattr(
        local_fs.LocalFileSystem,
        "cat_ranges",
        lambda self, paths, starts, ends, **kw: (
            requested.extend(zip(paths, starts, ends, strict=True)) or real(self, paths, starts, ends, **kw)
        ),
    )

    def no_whole_shard(*args, **kwargs):
        raise AssertionError("a located sample was read by reading its whole shard")

    monkeypatch.setattr(core.manifest, "read_shard", no_whole_shard)
    got = pa.concat_tables(iter_selected(str(located), batch_size=4))
    assert got.equals(expected)
    assert got.column_names == [*expected.column_names]  # no location columns: the output is what it was
    tar_shards = {r["shard_uri"] for r in new_rows.to_pylist() if r["byte_offset"] is not None}
    for shard in tar_shards:
        spans = new_rows.filter(pc.and_(pc.equal(new_rows["shard_uri"], shard), new_rows["selected"]))
        first = pc.min(spans["byte_offset"]).as_py()
        last = pc.max(pc.add(spans["byte_offset"], spans["byte_length"])).as_py()
        reads = [(s, e) for p, s, e in requested if p == shard]
        assert reads and min(s for s, _ in reads) >= first and max(e for _, e in reads) == last
        assert sum(e - s for s, e in reads) < os.path.getsize(shard)


def test_nearby_ranges_are_one_request_and_come_back_exact(tmp_path, monkeypatch):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 64
    path.write_bytes(data)
    ranges = [(9000, 9100), (10, 20), (30, 40), (5000, 5004)]  # any order; back in file order
    requests = []
    real = local_fs.LocalFileSystem.cat_ranges
    monkeypatch.setattr(
        local_fs.LocalFileSystem,
        "cat_ranges",
        lambda self, paths, starts, ends, **kw: (
            requests.append(list(zip(starts, ends, strict=True))) or real(self, paths, starts, ends, **kw)
        ),
    )
    got = list(iter_ranges(str(path), ranges, max_gap=100))
    assert [i for i, _ in got] == [1, 2, 3, 0] and all(b == data[slice(*ranges[i])] for i, b in got)
    assert requests == [[(10, 40), (5000, 5004), (9000, 9100)]]  # one call; the two close ranges merged
