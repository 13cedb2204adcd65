"""One way to open any URI: the same answers from local disk and from the S3 server."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.settings import StorageConfig
from core.storage import (
    arrow_filesystem,
    exists,
    expand_shards,
    filesystem,
    join,
    publish,
    publish_bytes,
    read_bytes,
    relative_name,
    shard_root,
    write_parquet,
)


@pytest.fixture(params=["local", "file", "s3"])
def root(request, tmp_path, s3):
    if request.param == "local":
        return str(tmp_path), None
    if request.param == "file":
        return f"file://{tmp_path}", None
    bucket = s3.make_bucket("storage")
    return f"{bucket}/{tmp_path.name}", s3.storage


def test_shard_specs_expand_alike(root):
    base, storage = root
    for i in range(3):
        publish_bytes(join(base, f"shards/{i:05d}.tar"), b"x", storage)
    publish_bytes(join(base, "shards/notes.txt"), b"not a shard", storage)
    prefix = expand_shards(join(base, "shards/"), storage, suffixes=(".tar",))
    glob = expand_shards(join(base, "shards/*.tar"), storage)
    brace = expand_shards(join(base, "shards/{00000..00002}.tar"), storage)
    assert [relative_name(join(base, "shards"), u) for u in prefix] == ["00000.tar", "00001.tar", "00002.tar"]
    assert prefix == glob
    assert [u.split("://")[-1] for u in brace] == [u.split("://")[-1] for u in prefix]


def test_publish_is_all_or_nothing(root):
    base, storage = root
    target = join(base, "out/result.bin")
    with publish(target, storage) as f:
        f.write(b"half")
        assert not exists(target, storage)  # invisible until the block ends
        f.write(b" and half")
    assert read_bytes(target, storage) == b"half and half"

    failed = join(base, "out/failed.bin")
    with pytest.raises(RuntimeError), publish(failed, storage) as f:
        f.write(b"partial")
        raise RuntimeError("writer crashed")
    fs, path = filesystem(join(base, "out"), storage)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path)) == ["result.bin"]  # no temporary left behind


def test_parquet_through_arrow_filesystem(root):
    base, storage = root
    table = pa.table({"a": [1, 2, 3]})
    write_parquet(table, join(base, "t.parquet"), storage)
    fs, path = arrow_filesystem(join(base, "t.parquet"), storage)
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_shard_root_and_relative_names():
    assert shard_root("s3://b/pool/{00000..00009}.tar") == "s3://b/pool"
    assert shard_root("/data/pool/*/x-*.parquet") == "/data/pool"
    assert shard_root("s3://b/pool/") == "s3://b/pool"
    assert relative_name("s3://b/pool", "s3://b/pool/a/00001.tar") == "a/00001.tar"
    assert relative_name("/data/pool", "/data/pool/00001.tar") == relative_name("s3://x/pool", "s3://x/pool/00001.tar")


def test_standard_aws_variables_reach_the_server(s3, monkeypatch):
    bucket = s3.make_bucket("env-config")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.storage.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    publish_bytes(f"{bucket}/via-env.txt", b"no storage section needed", StorageConfig())
    assert read_bytes(f"{bucket}/via-env.txt", s3.storage) == b"no storage section needed"
