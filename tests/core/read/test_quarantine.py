"""Bad input of every kind lands in the errors contract with its reason, and the read goes on."""

from __future__ import annotations

import io
import shutil
import tarfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.contracts import ERRORS
from core.read import Quarantine, read_source
from core.settings import SourceSpec
from core.storage import join, publish_bytes


def jpeg(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="JPEG")
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path, s3):
    """A fresh root on local disk or on the S3 server, with the storage config that reaches it."""
    if request.param == "local":
        return str(tmp_path), None
    bucket = s3.make_bucket("quarantine")
    return f"{bucket}/{tmp_path.name}", s3.storage


def read(spec: SourceSpec, storage, **kw) -> tuple[list[str], Quarantine]:
    q = Quarantine()
    ids = [i for t in read_source(spec.bind(storage), quarantine=q, **kw) for i in t["sample_id"].to_pylist()]
    return ids, q


def reasons(q: Quarantine) -> dict[str | None, str]:
    table = q.table()
    assert table.schema.equals(ERRORS)
    return dict(zip(table["sample_id"].to_pylist(), table["reason"].to_pylist(), strict=True))


def test_webdataset_bad_members(place):
    root, storage = place
    publish_bytes(
        join(root, "wds/00000.tar"),
        tar_bytes(
            [
                ("a.jpg", jpeg()),
                ("a.txt", b"a red square"),
                ("b.jpg", b"not an image"),
                ("b.txt", b"broken"),
                ("c.jpg", jpeg()),  # no text at all
                ("d.png", jpeg()),
                ("d.json", b'{"caption": "from json"}'),
                ("e.txt", b"text without image"),
            ]
        ),
        storage,
    )
    ids, q = read(SourceSpec(name="web", format="webdataset", uri=join(root, "wds/")), storage)
    assert ids == ["web/00000.tar/a", "web/00000.tar/d"]
    assert reasons(q) == {
        "web/00000.tar/b": "undecodable_image",
        "web/00000.tar/c": "missing_text",
        "web/00000.tar/e": "missing_image",
    }


def test_webdataset_truncated_tar_keeps_what_was_read(place):
    root, storage = place
    data = tar_bytes(
        [(f"{i:03d}.{ext}", jpeg() if ext == "jpg" else b"caption") for i in range(6) for ext in ("jpg", "txt")]
    )
    # Cut inside the data of 001.jpg (000.jpg: 512 + 1024 bytes, 000.txt: 512 + 512, then 001.jpg's header).
    publish_bytes(join(root, "wds/00000.tar"), data[:3300], storage)
    ids, q = read(SourceSpec(name="web", format="webdataset", uri=join(root, "wds/*.tar")), storage)
    assert ids == ["web/00000.tar/000"]
    assert list(q.counts) == ["corrupt_tar"]
    assert q.rows[0]["shard_uri"].endswith("00000.tar") and q.rows[0]["sample_id"] is None


def test_brace_spec_with_a_missing_shard(place):
    root, storage = place
    publish_bytes(join(root, "wds/00000.tar"), tar_bytes([("a.jpg", jpeg()), ("a.txt", b"x")]), storage)
    ids, q = read(SourceSpec(name="web", format="webdataset", uri=join(root, "wds/{00000..00001}.tar")), storage)
    assert ids == ["web/00000.tar/a"]
    assert dict(q.counts) == {"unreadable_shard": 1} and q.rows[0]["shard_uri"].endswith("00001.tar")


def test_parquet_bad_rows_and_shards(place):
    root, storage = place
    good = pa.table({"image": [jpeg(), b"\x00garbage", jpeg()], "text": ["ok", "bad image", None]})
    publish_bytes(join(root, "pq/00000.parquet"), parquet_bytes(good), storage)
    publish_bytes(join(root, "pq/00001.parquet"), parquet_bytes(pa.table({"img": [jpeg()], "caption": ["x"]})), storage)
    publish_bytes(join(root, "pq/00002.parquet"), b"PAR1 this is not parquet", storage)
    ids, q = read(SourceSpec(name="docs", format="parquet", uri=join(root, "pq/")), storage)
    assert ids == ["docs/00000.parquet/0"]
    assert reasons(q) == {
        "docs/00000.parquet/1": "undecodable_image",
        "docs/00000.parquet/2": "missing_text",
        None: "unreadable_shard",
    }
    assert q.counts["wrong_schema"] == 1  # 00001 (its row shares the None key with 00002 above)


def test_parquet_custom_columns_and_hf_image_struct(tmp_path):
    images = pa.array([{"bytes": jpeg(), "path": None}], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    publish_bytes(str(tmp_path / "s.parquet"), parquet_bytes(pa.table({"img": images, "caption": ["hello"]})))
    spec = SourceSpec(
        name="hf",
        format="parquet",
        uri=str(tmp_path / "*.parquet"),
        image_column="img",
        text_column="caption",
    )
    ids, q = read(spec, None)
    assert ids == ["hf/s.parquet/0"] and len(q) == 0


def test_truncated_jpeg_caught_by_full_check(tmp_path):
    big = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(big, format="JPEG")
    cut = big.getvalue()[: len(big.getvalue()) // 2]
    publish_bytes(str(tmp_path / "t.parquet"), parquet_bytes(pa.table({"image": [cut], "text": ["half"]})))
    spec = SourceSpec(name="p", format="parquet", uri=str(tmp_path / "t.parquet"))
    assert read(spec, None, image_check="header")[0] == ["p/t.parquet/0"]
    ids, q = read(spec, None, image_check="full")
    assert ids == [] and dict(q.counts) == {"undecodable_image": 1}


def _copy_robot(local_corpus, tmp_path, index: int) -> SourceSpec:
    spec = local_corpus.robot[index]
    dest = tmp_path / spec.name
    shutil.copytree(spec.uri, dest)
    return spec.model_copy(update={"uri": str(dest)})


def test_lerobot_without_info_json(local_corpus, tmp_path):
    spec = _copy_robot(local_corpus, tmp_path, 0)
    (tmp_path / spec.name / "meta" / "info.json").unlink()
    ids, q = read(spec, None)
    assert ids == [] and dict(q.counts) == {"unreadable_source": 1}


def test_lerobot_unknown_task_is_missing_text(local_corpus, tmp_path):
    spec = _copy_robot(local_corpus, tmp_path, 0)
    tasks_file = tmp_path / spec.name / "meta" / "tasks.parquet"
    tasks = pd.read_parquet(tasks_file)
    tasks.iloc[1:].to_parquet(tasks_file)  # forget task 0
    full, _ = read(local_corpus.robot[0], None)
    ids, q = read(spec, None)
    assert q.counts["missing_text"] > 0 and len(ids) + q.counts["missing_text"] == len(full)

