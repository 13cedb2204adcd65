"""Malformed fields are quarantined samples, never a crashed run; ids are unique by construction; transient
storage faults are raised, not quarantined; programming errors are not swallowed."""

from __future__ import annotations

import io
import math
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.read import Quarantine, read_source
from core.read.checks import MAX_TEXT_CHARS, accept_sample
from core.settings import SourceSpec


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def read(uri: str) -> tuple[list[str], dict]:
    q = Quarantine()
    spec = SourceSpec(name="web", format="webdataset", uri=uri)
    ids = [i for t in read_source(spec, quarantine=q) for i in t["sample_id"].to_pylist()]
    return ids, {r["sample_id"]: r["reason"] for r in q.rows}


def test_malformed_captions_are_quarantined_not_a_crash(tmp_path):
    members = [
        ("ok.jpg", jpeg()), ("ok.json", b'{"caption": "a cup"}'),
        ("num.jpg", jpeg()), ("num.json", b'{"caption": 12345}'),
        ("lst.jpg", jpeg()), ("lst.json", b'{"caption": ["a", "b"]}'),
        ("bad.jpg", jpeg()), ("bad.json", b'{"caption": '),
        ("nul.jpg", jpeg()), ("nul.txt", b"a\x00cup"),
        ("latin.jpg", jpeg()), ("latin.txt", "caf\xe9".encode("latin-1")),
        ("huge.jpg", jpeg()), ("huge.txt", b"x" * (MAX_TEXT_CHARS + 1)),
        ("long.jpg", jpeg()), ("long.txt", b"y" * MAX_TEXT_CHARS),
    ]
    write_tar(tmp_path / "0.tar", members)
    ids, reasons = read(str(tmp_path / "0.tar"))
    assert ids == ["web/0.tar/ok", "web/0.tar/long"]
    assert reasons == {
        "web/0.tar/num": "malformed_text",
        "web/0.tar/lst": "malformed_text",
        "web/0.tar/bad": "malformed_meta",
        "web/0.tar/nul": "nul_in_text",
        "web/0.tar/latin": "non_utf8_text",
        "web/0.tar/huge": "text_too_long",
    }


def test_keys_keep_their_folder_and_a_repeated_key_is_quarantined(tmp_path):
    members = [
        ("dirA/000000050.jpg", jpeg()), ("dirA/000000050.txt", b"in a folder"),
        ("000000050.jpg", jpeg()), ("000000050.txt", b"at the top"),
        ("000000051.jpg", jpeg()), ("000000051.txt", b"first"),
        ("000000052.jpg", jpeg()), ("000000052.txt", b"other"),
        ("000000051.jpg", jpeg()), ("000000051.txt", b"again, later in the tar"),
        ("000000053.jpg", jpeg()), ("000000053.txt", b"one"), ("000000053.txt", b"two"),
    ]
    write_tar(tmp_path / "0.tar", members)
    ids, reasons = read(str(tmp_path / "0.tar"))
    assert ids == ["web/0.tar/dirA/000000050", "web/0.tar/000000050", "web/0.tar/000000051", "web/0.tar/000000052"]
    assert reasons == {"web/0.tar/000000051": "duplicate_key", "web/0.tar/000000053": "duplicate_key"}


@pytest.mark.parametrize(
    "action,state,reason",
    [
        ([0.1, math.nan], None, "non_finite_action"),
        ([0.1, 0.2], [math.inf, 0.0], "non_finite_state"),
        (["x"], None, "malformed_action"),
        ([0.1, 0.2], [0.0, 1.0], None),
    ],
)
def test_non_finite_robot_values_are_quarantined(action, state, reason):
    q = Quarantine()
    row = {"sample_id": "r/0/k", "shard_uri": "r/0", "image": jpeg(), "text": "pick", "action": action, "state": state}
    assert accept_sample(row, q, "header") is (reason is None)
    assert dict(q.counts) == ({reason: 1} if reason else {})


class _Reset:
    """A file object whose stream is cut by the network after ``ok`` bytes."""

    def __init__(self, data: bytes, ok: int) -> None:
        self.buf, self.ok = io.BytesIO(data), ok

    def read(self, n: int = -1) -> bytes:
        if self.buf.tell() >= self.ok:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self.buf.read(n if n >= 0 and self.buf.tell() + n <= self.ok else self.ok - self.buf.tell())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_transient_fault_mid_shard_is_raised_not_quarantined(tmp_path, monkeypatch):
    import fsspec.implementations.local as local

    write_tar(tmp_path / "0.tar", [(f"{i:03d}.{e}", jpeg() if e == "jpg" else b"cap") for i in range(10)
                                   for e in ("jpg", "txt")])
    data = (tmp_path / "0.tar").read_bytes()
    monkeypatch.setattr(local.LocalFileSystem, "open", lambda self, path, mode="rb", **kw: _Reset(data, 4000))
    q = Quarantine()
    with pytest.raises(ConnectionResetError):
        list(read_source(SourceSpec(name="web", format="webdataset", uri=str(tmp_path / "0.tar")), quarantine=q))
    assert len(q) == 0  # nothing recorded: the shard is read again, never cached with 2 of its 10 samples


def test_transient_fault_in_a_parquet_shard_is_raised(tmp_path, monkeypatch):
    import fsspec.implementations.local as local

    pq.write_table(pa.table({"image": [jpeg()] * 3, "text": ["a"] * 3}), tmp_path / "0.parquet")

    def refuse(self, path, mode="rb", **kw):
        raise TimeoutError("read timed out")

    monkeypatch.setattr(local.LocalFileSystem, "open", refuse)
    q = Quarantine()
    with pytest.raises(TimeoutError):
        list(read_source(SourceSpec(name="p", format="parquet", uri=str(tmp_path / "0.parquet")), quarantine=q))
    assert len(q) == 0
