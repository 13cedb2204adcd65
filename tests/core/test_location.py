"""A ``Location`` reads and publishes alike on local disk and over the S3 server, and travels pickled without its
filesystem."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

from core.location import Location


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path, s3) -> Location:
    if request.param == "local":
        return Location(str(tmp_path))
    return Location(f"{s3.make_bucket('location')}/{tmp_path.name}", s3.storage)


def test_bytes_round_trip(root):
    blob = root.join("a", "b.bin")
    assert str(blob) == blob.uri == root.uri + "/a/b.bin" and blob.storage is root.storage
    assert not blob.exists()
    blob.publish_bytes(b"hello")
    assert blob.exists() and blob.read_bytes() == b"hello"
    with blob.open() as f:
        assert f.read() == b"hello"
    assert blob.protocol == ("s3" if root.uri.startswith("s3://") else "file")


def test_parquet_round_trip(root):
    table = pa.table({"x": list(range(10))})
    where = root.join("t").with_suffix(".parquet")
    where.write_parquet(table, row_group_size=4)
    assert where.read_parquet(["x"]).equals(table)
    with where.parquet_file() as pf:
        assert pf.metadata.num_row_groups == 3


def test_pickles_without_its_filesystem(root):
    root.join("x").publish_bytes(b"1")
    assert root.fs is not None  # built, then left behind by pickle
    copy = pickle.loads(pickle.dumps(root))
    assert copy == root and hash(copy) == hash(root) and "_fs_path" not in copy.__dict__
    assert copy.join("x").read_bytes() == b"1"


def test_of_binds_a_string_and_keeps_a_location(s3):
    where = Location.of("s3://b/x", s3.storage)
    assert where == Location("s3://b/x", s3.storage)
    assert Location.of(where, None) is where  # a location keeps its own settings
    assert Location.of("/data").storage is None
