"""``export_selected``: the selection as img2dataset-style WebDataset shards in rank order, resumable by shard."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import ValidationError

import tasks.export as export
from core.manifest import write_manifest
from core.read import Quarantine, read_source
from core.storage import filesystem
from tasks.executor import JobFailed
from tasks.export import export_selected, image_ext
from tasks.export_params import ExportParams

LOCATION = ["byte_offset", "byte_length", "row_group"]


def _pool(corpus) -> pa.Table:
    """Samples of a tar source and a Parquet one, with a score that ranks them out of shard order."""
    samples = pa.concat_tables(
        pa.concat_tables(read_source(spec, quarantine=Quarantine())) for spec in corpus.pool[1:3]
    )
    n = samples.num_rows
    order = sorted(range(n), key=lambda i: (i * 7) % n)  # rank r goes to sample order[r]
    rank = [0] * n
    for r, i in enumerate(order):
        rank[i] = r
    return (
        samples.append_column("score", pa.array([1.0 - r / n for r in rank], pa.float32()))
        .append_column("rank", pa.array(rank, pa.int64()))
        .append_column("selected", pa.array([r < 13 for r in rank]))
    )


def _write(corpus, pool: pa.Table, uri: str, storage=None, *, with_locations: bool = True) -> None:
    part = pool if with_locations else pool.drop_columns(LOCATION)
    write_manifest(uri, [part], {"pool": [s.model_dump(mode="json") for s in corpus.pool]}, storage)


def _members(path: str, fs=None) -> list[tuple[str, bytes]]:
    with fs.open(path, "rb") if fs else open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


@pytest.fixture(scope="module")
def pool(local_corpus) -> pa.Table:
    return _pool(local_corpus)


def test_shards_hold_the_selection_in_rank_order(local_corpus, pool, tmp_path):
    manifest = str(tmp_path / "run" / "manifest.parquet")
    _write(local_corpus, pool, manifest)
    out = tmp_path / "export"
    report = export_selected(ExportParams(manifest_uri=manifest, output_uri=str(out), samples_per_shard=5))
    assert (report.shards, report.written, report.samples, report.failed) == (3, 3, 13, {})
    assert sorted(os.listdir(out)) == [
        "00000.parquet", "00000.tar", "00001.parquet", "00001.tar", "00002.parquet", "00002.tar", "_SUCCESS",
        "_export.json", "index.json",
    ]  # fmt: skip
    by_id = {r["sample_id"]: r for r in pool.to_pylist()}
    chosen = sorted((r for r in pool.to_pylist() if r["selected"]), key=lambda r: r["rank"])
    exported, extensions = [], set()
    for shard in range(3):
        members = _members(str(out / f"{shard:05d}.tar"))
        keys = [name.split(".")[0] for name, _ in members]
        assert keys == sorted(keys) and len(members) == 3 * len(set(keys))  # image, txt, json per key, in order
        for key in dict.fromkeys(keys):
            files = {name.split(".", 1)[1]: data for name, data in members if name.startswith(key + ".")}
            info = json.loads(files["json"])
            source = by_id[info["sample_id"]]
            ext = next(e for e in files if e not in ("txt", "json"))
            assert files[ext] == source["image"] and ext == image_ext(source["image"])
            extensions.add(ext)
            assert files["txt"].decode() == source["text"] == info["caption"] and info["key"] == key
            assert info["original"]["shard_uri"] == source["shard_uri"]
            assert info["original"]["byte_offset"] == source["byte_offset"]
            exported.append(info["sample_id"])
        rows = pq.read_table(out / f"{shard:05d}.parquet")
        assert rows["status"].to_pylist() == ["success"] * rows.num_rows
    assert exported == [r["sample_id"] for r in chosen]
    assert extensions == {"jpg", "png"}  # the tar source's PNGs, the Parquet source's JPEGs, as they were
    index = json.loads((out / "index.json").read_text())
    assert [(s["shard"], s["samples"]) for s in index["shards"]] == [
        ("00000.tar", 5),
        ("00001.tar", 5),
        ("00002.tar", 3),
    ]
    assert index["samples"] == 13 and index["shards"][1]["first_rank"] == chosen[5]["rank"]

    (out / "00001.tar").unlink()
    before = {n: (out / n).stat().st_mtime_ns for n in ("00000.tar", "00002.tar")}
    again = export_selected(ExportParams(manifest_uri=manifest, output_uri=str(out), samples_per_shard=5))
    assert (again.written, again.samples) == (1, 13)  # only the missing shard
    assert before == {n: (out / n).stat().st_mtime_ns for n in before}

    with pytest.raises(ValueError, match="samples_per_shard"):
        export_selected(ExportParams(manifest_uri=manifest, output_uri=str(out), samples_per_shard=4))


def test_without_locations_the_same_shards_come_from_whole_shard_reads(local_corpus, pool, tmp_path):
    tars = {}
    for located in (True, False):
        manifest = str(tmp_path / f"run-{located}" / "manifest.parquet")
        _write(local_corpus, pool, manifest, with_locations=located)
        out = tmp_path / f"export-{located}"
        export_selected(ExportParams(manifest_uri=manifest, output_uri=str(out), samples_per_shard=8, fetch_batch=3))
        tars[located] = [(out / f"{s:05d}.tar").read_bytes() for s in range(2)]
    located_json = json.loads(dict(_members(str(tmp_path / "export-True" / "00000.tar")))["000000000.json"])
    assert located_json["original"]["byte_length"] or located_json["original"]["row_group"] is not None
    strip = lambda members: [(n, d if not n.endswith(".json") else b"") for n, d in members]  # noqa: E731
    for a, b in zip(tars[True], tars[False], strict=True):  # the same members; only the recorded locations differ
        assert strip(_members_of(a)) == strip(_members_of(b))


def _members_of(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def test_export_over_s3(s3, s3_corpus):
    bucket = s3.make_bucket("export")
    pool = _pool(s3_corpus)
    manifest = f"{bucket}/runs/r1/manifest.parquet"
    _write(s3_corpus, pool, manifest, s3.storage)
    params = ExportParams(
        manifest_uri=manifest, output_uri=f"{bucket}/exports/r1", samples_per_shard=10, storage=s3.storage
    )
    report = export_selected(params)
    assert (report.shards, report.samples) == (2, 13)
    fs, _ = filesystem(bucket, s3.storage)
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{bucket}/exports/r1"))
    assert names == [
        "00000.parquet",
        "00000.tar",
        "00001.parquet",
        "00001.tar",
        "_SUCCESS",
        "_export.json",
        "index.json",
    ]
    members = _members(f"{bucket}/exports/r1/00001.tar", fs)
    assert len(members) == 9 and Image.open(io.BytesIO(members[0][1])).size == (32, 32)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"samples_per_shard": 0}, "samples_per_shard"),
        ({"executor": "spark"}, "executor"),
        ({"output_uri": "/r/m.parquet"}, "output_uri"),
    ],
)
def test_bad_options_are_refused_naming_the_field(change, field):
    with pytest.raises(ValidationError, match=field):
        ExportParams.model_validate({"manifest_uri": "/r/m.parquet", "output_uri": "/r/export", **change})


def test_ray_tasks_write_the_same_shards(ray_local, local_corpus, pool, tmp_path):
    manifest = str(tmp_path / "run" / "manifest.parquet")
    _write(local_corpus, pool, manifest)
    outs = {}
    for executor in ("threads", "ray"):
        outs[executor] = tmp_path / executor
        params = ExportParams(
            manifest_uri=manifest, output_uri=str(outs[executor]), samples_per_shard=6, executor=executor
        )
        assert export_selected(params).written == 3
    for name in ("00000.tar", "00001.tar", "00002.tar", "index.json"):
        assert (outs["ray"] / name).read_bytes() == (outs["threads"] / name).read_bytes()


def test_image_extension_comes_from_the_bytes():
    def encoded(fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, format=fmt)
        return buf.getvalue()

    assert [image_ext(encoded(f)) for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP")] == [
        "jpg",
        "png",
        "webp",
        "gif",
        "bmp",
    ]


def test_a_transient_fault_is_retried_and_a_content_error_fails_its_shard_named(local_corpus, pool, tmp_path,
                                                                                monkeypatch):
    manifest = str(tmp_path / "run" / "manifest.parquet")
    _write(local_corpus, pool, manifest)
    real, calls = export._fetch, Counter()

    def faulty(job, rows, quarantine):
        calls[job.name] += 1
        if job.name == "00001" and calls[job.name] == 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        if job.name == "00002":
            raise ValueError("bad bytes")
        return real(job, rows, quarantine)

    monkeypatch.setattr(export, "_fetch", faulty)
    out = tmp_path / "export"
    with pytest.raises(JobFailed, match=r"export: 1 unit\(s\) failed; a rerun writes them .*: 00002.tar \(ValueError"):
        export_selected(ExportParams(manifest_uri=manifest, output_uri=str(out), samples_per_shard=5))
    assert calls == {"00000": 1, "00001": 2, "00002": 1}  # the reset retried once; the content error tried once
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar", "00001.tar"]  # the failed shard wrote nothing
