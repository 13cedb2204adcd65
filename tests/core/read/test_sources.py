"""Every reader over the tiny synthetic corpus, on local disk and over HTTP from the S3 server: same samples."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.contracts import SAMPLE
from core.read import Quarantine, list_shards, read_shard, read_source
from core.read.lerobot import load_meta, read_robot_steps
from tests.conftest import TINY


def _read_all(spec, **kw) -> tuple[pa.Table, Quarantine]:
    q = Quarantine()
    tables = list(read_source(spec, quarantine=q, **kw))
    return pa.concat_tables(tables), q


def _comparable(table: pa.Table) -> pa.Table:
    """Everything but the storage location of the shard."""
    return table.drop_columns(["shard_uri"]).sort_by("sample_id")


@pytest.mark.parametrize("role,index", [("pool", i) for i in range(4)] + [("robot", 0), ("robot", 1)])
def test_local_and_s3_read_identically(local_corpus, s3_corpus, s3, role, index):
    local_spec, s3_spec = getattr(local_corpus, role)[index], getattr(s3_corpus, role)[index]
    assert s3_spec.uri.startswith("s3://")
    local, q_local = _read_all(local_spec)
    remote, q_remote = _read_all(s3_spec)  # bound to the server's settings

    assert local.schema.equals(SAMPLE, check_metadata=False)
    assert len(q_local) == 0 and len(q_remote) == 0
    assert local.num_rows > 0
    assert _comparable(local).equals(_comparable(remote))
    assert pc.all(pc.starts_with(remote["shard_uri"], "s3://")).as_py()
    assert pc.count_distinct(local["sample_id"]).as_py() == local.num_rows


def test_pool_samples_match_ground_truth(local_corpus):
    truth = pq.read_table(local_corpus.ground_truth_uri)
    ids = []
    for spec in local_corpus.pool:
        table, _ = _read_all(spec)
        ids += table["sample_id"].to_pylist()
    assert sorted(ids) == sorted(truth["sample_id"].to_pylist())
    assert len(ids) == 4 * TINY.samples_per_source


def test_batches_are_bounded(local_corpus):
    spec = local_corpus.pool[0]
    shard = list_shards(spec)[0]
    sizes = [t.num_rows for t in read_shard(spec, shard, quarantine=Quarantine(), batch_size=4)]
    assert max(sizes) <= 4 and len(sizes) >= 2


def test_robot_frames_carry_instruction_and_stride(local_corpus):
    for spec in local_corpus.robot:
        full, _ = _read_all(spec)
        strided, _ = _read_all(spec.model_copy(update={"frame_stride": 3}))
        assert full.num_rows == TINY.robot_episodes * TINY.frames_per_episode
        assert strided.num_rows == TINY.robot_episodes * len(range(0, TINY.frames_per_episode, 3))
        assert all(t.strip() for t in full["text"].to_pylist())


@pytest.mark.parametrize("index", [0, 1])
def test_robot_steps_have_actions_and_images(local_corpus, index):
    spec = local_corpus.robot[index]
    meta = load_meta(spec.uri)
    q = Quarantine()
    steps = pa.concat_tables(
        t for shard in list_shards(spec) for t in read_robot_steps(meta, shard, source=spec.name, quarantine=q)
    )
    assert len(q) == 0
    assert steps.num_rows == TINY.robot_episodes * TINY.frames_per_episode
    assert {len(a) for a in steps["action"].to_pylist()} == {7}
    assert sorted(set(steps["episode_index"].to_pylist())) == list(range(TINY.robot_episodes))


def test_robot_cameras_cover_image_and_video_features(local_corpus):
    assert {load_meta(spec.uri).image_dtype for spec in local_corpus.robot} == {"image", "video"}
