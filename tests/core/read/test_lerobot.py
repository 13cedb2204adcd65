"""The LeRobot reader as its users meet it: metadata read once, a broken video loses only its own episode's
frames, frames found by the dataset's timestamps and kept lossless."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.read import Quarantine, lerobot, read_source
from core.settings import SourceSpec
from tests.conftest import TINY

FRAMES = TINY.frames_per_episode


def _copy(local_corpus, tmp_path, dtype: str) -> SourceSpec:
    spec = next(s for s in local_corpus.robot if lerobot.load_meta(s.uri).image_dtype == dtype)
    shutil.copytree(spec.uri, tmp_path / spec.name)
    return spec.model_copy(update={"uri": str(tmp_path / spec.name)})


def _read(spec: SourceSpec) -> tuple[pa.Table, Quarantine]:
    q = Quarantine()
    return pa.concat_tables(read_source(spec, quarantine=q)), q


def _episodes_file(spec: SourceSpec) -> Path:
    return next((Path(spec.uri) / "meta/episodes").rglob("*.parquet"))


def _episodes(table: pa.Table) -> list[int]:
    return sorted({int(key[2:8]) for key in table["key"].to_pylist()})  # keys are epEEEEEE_frFFFFFF


def test_episode_metadata_is_read_once_and_without_stats(local_corpus, tmp_path, monkeypatch):
    spec = _copy(local_corpus, tmp_path, "image")
    assert any(c.startswith("stats/") for c in pq.read_schema(_episodes_file(spec)).names)
    calls = []
    real = lerobot._read_episodes
    monkeypatch.setattr(lerobot, "_read_episodes", lambda *a: calls.append(a[3]) or real(*a))
    table, _ = _read(spec)
    _read(spec)
    assert len(lerobot.data_files(lerobot.load_meta(spec.uri))) == 2 and table.num_rows == 3 * FRAMES
    assert len(calls) == 1 and not any(c.startswith("stats/") for c in calls[0])


def test_a_missing_video_loses_only_its_episodes_frames(local_corpus, tmp_path):
    spec = _copy(local_corpus, tmp_path, "video")
    sorted((tmp_path / spec.name).rglob("*.mp4"))[0].unlink()  # episodes 0 and 1
    table, q = _read(spec)
    assert _episodes(table) == [2] and table.num_rows == FRAMES
    assert dict(q.counts) == {"unreadable_video": 2 * FRAMES}  # one row per lost frame
    assert len({r["sample_id"] for r in q.rows}) == 2 * FRAMES


@pytest.mark.parametrize("damage", ["truncate", "zeros"])
def test_a_broken_video_is_quarantined_per_frame(local_corpus, tmp_path, damage):
    spec = _copy(local_corpus, tmp_path, "video")
    video = sorted((tmp_path / spec.name).rglob("*.mp4"))[0]
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 1000)
    table, q = _read(spec)
    assert table.num_rows + q.counts["unreadable_video"] == 3 * FRAMES and set(q.counts) == {"unreadable_video"}
    assert 2 in _episodes(table)


def test_an_episode_whose_video_is_gone_does_not_take_the_next_one(local_corpus, tmp_path):
    """Episodes 0 and 1 share a data file; episode 0's video points at a file that does not exist."""
    spec = _copy(local_corpus, tmp_path, "video")
    path = _episodes_file(spec)
    episodes = pq.read_table(path)
    column = f"videos/{lerobot.load_meta(spec.uri).image_key}/file_index"
    moved = pa.array([9 if i == 0 else f for i, f in enumerate(episodes[column].to_pylist())], pa.int64())
    pq.write_table(episodes.set_column(episodes.schema.get_field_index(column), column, moved), path)
    table, q = _read(spec)
    assert _episodes(table) == [1, 2] and table.num_rows == 2 * FRAMES
    assert q.counts["unreadable_video"] == FRAMES


def test_video_frames_are_found_by_timestamp_and_kept_lossless(local_corpus, tmp_path):
    """Frame indices that are not timestamp * fps (a subsampled dataset) still find their frames."""
    spec = _copy(local_corpus, tmp_path, "video")
    meta = lerobot.load_meta(spec.uri)
    for data_file in lerobot.data_files(meta):
        data = pq.read_table(data_file)
        doubled = pc.multiply(data["frame_index"], 2)
        pq.write_table(data.set_column(data.schema.get_field_index("frame_index"), "frame_index", doubled), data_file)
    table, q = _read(spec)
    assert len(q) == 0 and table.num_rows == 3 * FRAMES
    first_video = meta.video_uri(0, 0)
    with av.open(first_video) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    row = table.filter(pc.equal(table["key"], "ep000001_fr000004")).to_pylist()[0]  # episode 1, its 3rd frame
    image = Image.open(io.BytesIO(row["image"]))
    assert image.format == "PNG" and np.array_equal(np.asarray(image), decoded[FRAMES + 2])


def test_reading_an_image_dataset_does_not_import_pyav(local_corpus):
    spec = next(s for s in local_corpus.robot if lerobot.load_meta(s.uri).image_dtype == "image")
    code = (
        "import sys; from core.read import Quarantine, read_source; from core.settings import SourceSpec\n"
        f"spec = SourceSpec.model_validate_json({spec.model_dump_json()!r})\n"
        "assert sum(t.num_rows for t in read_source(spec, quarantine=Quarantine())) > 0\n"
        "assert 'av' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_bug_in_the_reader_crashes_instead_of_quarantining_the_source(local_corpus, tmp_path, monkeypatch):
    spec = _copy(local_corpus, tmp_path, "image")

    def broken(*args):
        raise KeyError("episode_index")  # what a programming error in the reader looks like

    monkeypatch.setattr(lerobot, "_read_episodes", broken)
    with pytest.raises(KeyError, match="episode_index"):
        _read(spec)


def test_a_transient_fault_while_listing_is_raised_not_quarantined(local_corpus, tmp_path, monkeypatch):
    spec = _copy(local_corpus, tmp_path, "image")

    def reset(*args):
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(lerobot, "_read_episodes", reset)
    with pytest.raises(ConnectionResetError):
        _read(spec)


def test_bad_metadata_is_a_quarantined_source(local_corpus, tmp_path):
    spec = _copy(local_corpus, tmp_path, "image")
    info = Path(spec.uri) / "meta/info.json"
    info.write_text(info.read_text().replace('"features"', '"feature_list"'))
    q = Quarantine()
    assert list(read_source(spec, quarantine=q)) == []
    assert dict(q.counts) == {"unreadable_source": 1} and "lacks ['features']" in q.rows[0]["detail"]
