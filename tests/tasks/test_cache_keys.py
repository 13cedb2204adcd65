"""A cache entry is what was read (shard + read settings + backbone), not which source name read it; sources that
cannot give a meaningful run are refused at preflight."""

from __future__ import annotations

import numpy as np
import pytest

from core.location import Location
from core.settings import SourceSpec
from estimator.backbones.tiny import save_tiny_backbone
from estimator.scorer import ScorerConfig
from tasks.curation import Plan, gather_errors, preflight
from tasks.embed import Embed
from tasks.embed_shards import ShardEmbedder
from tasks.executor import Job, Threads, run
from tasks.filters.blocklist import BlocklistSpec
from tasks.filters.quality import QualityConfig
from tasks.filters.screen import ScreenPlan
from tasks.score import shard_manifest_rows


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("model")), seed=0)


def plan(corpus, backbone, cache_uri: str, *, pool=None, robot=None) -> Plan:
    return preflight(pool=pool or corpus.pool[:1], robot=robot or corpus.robot[:1], backbone_spec=backbone,
                     scorer_config=ScorerConfig(), cache_at=Location(cache_uri), storage=None)


def embed_all(p: Plan, backbone) -> None:
    """The plan's embedding job, in this process (the Ray job runs the same worker per shard); the worker's preparing
    tasks run on the test run's Ray (``ray_local``)."""
    worker = ShardEmbedder(embed=Embed(backbone=backbone), cache=p.cache, dtype="float32")
    assert not run(Job(step="embed", units=p.todo, work=worker), Threads(workers=1)).failures


def manifest_ids(p: Plan) -> tuple[list[str], list[str]]:
    parts = []
    for shard in p.pool:
        keys = shard.entry.read_keys()
        n = keys.num_rows
        parts.append(shard_manifest_rows(shard, keys, np.zeros(n, np.float32), np.arange(n), np.zeros(n, bool)))
    return [i for t in parts for i in t["sample_id"].to_pylist()], [s for t in parts for s in t["source"].to_pylist()]


@pytest.mark.usefixtures("ray_local")
def test_a_renamed_source_is_served_from_the_cache_under_its_new_name(local_corpus, backbone, tmp_path):
    first = plan(local_corpus, backbone, str(tmp_path))
    embed_all(first, backbone)
    old_ids, _ = manifest_ids(first)
    renamed = local_corpus.pool[0].model_copy(update={"name": "renamed"})
    again = plan(local_corpus, backbone, str(tmp_path), pool=[renamed])
    assert again.todo == []  # nothing to embed: the same shards read the same way
    ids, sources = manifest_ids(again)
    assert set(sources) == {"renamed"}
    assert ids == ["renamed/" + i.split("/", 1)[1] for i in old_ids]
    old = local_corpus.pool[0].name
    assert all(i is None or i.startswith(f"{old}/") for i in gather_errors(first)["sample_id"].to_pylist())
    errors = gather_errors(again)
    assert not any((i or "").startswith(f"{old}/") for i in errors["sample_id"].to_pylist())


@pytest.mark.usefixtures("ray_local")
def test_wrong_parquet_columns_then_fixed_columns_reads_again(local_corpus, backbone, tmp_path):
    parquet = next(s for s in local_corpus.pool if s.format == "parquet")
    wrong = parquet.model_copy(update={"text_column": "caption"})
    bad = plan(local_corpus, backbone, str(tmp_path), pool=[wrong])
    embed_all(bad, backbone)
    assert set(gather_errors(bad)["reason"].to_pylist()) == {"wrong_schema"}
    fixed = plan(local_corpus, backbone, str(tmp_path), pool=[parquet])
    assert {j.shard_uri for j in fixed.todo} >= {s.shard_uri for s in fixed.pool}  # every pool shard read again
    embed_all(fixed, backbone)
    assert len(manifest_ids(fixed)[0]) == local_corpus.counts[parquet.name]


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("change", [{"frame_stride": 2}, {"image_key": None}])  # None: the first camera
def test_a_changed_stride_or_camera_reads_the_robot_set_again(local_corpus, backbone, tmp_path, change):
    first = plan(local_corpus, backbone, str(tmp_path))
    embed_all(first, backbone)
    assert plan(local_corpus, backbone, str(tmp_path)).todo == []
    changed = local_corpus.robot[0].model_copy(update=change)
    again = plan(local_corpus, backbone, str(tmp_path), robot=[changed])
    assert {j.shard_uri for j in again.todo} == {s.shard_uri for s in again.robot}
    assert {s.entry for s in again.robot}.isdisjoint({s.entry for s in first.robot})


def test_a_robot_dataset_in_the_pool_is_refused(local_corpus, backbone, tmp_path):
    with pytest.raises(ValueError, match=r"pool\.1\.format: .* is a LeRobot dataset"):
        plan(local_corpus, backbone, str(tmp_path), pool=[local_corpus.pool[0], local_corpus.robot[0]])


def test_a_pool_source_over_robot_files_is_refused(local_corpus, backbone, tmp_path):
    robot = local_corpus.robot[0]
    over = SourceSpec(name="sneaky", format="parquet", uri=robot.uri.rstrip("/") + "/data/")
    with pytest.raises(ValueError, match=r"robot\.0\.uri: resolves to shards that pool\.0\.uri already reads"):
        plan(local_corpus, backbone, str(tmp_path), pool=[over], robot=[robot])


def test_two_sources_over_the_same_shards_are_refused(local_corpus, backbone, tmp_path):
    twin = local_corpus.pool[0].model_copy(update={"name": "twin"})
    with pytest.raises(ValueError, match=r"pool\.1\.uri: resolves to shards that pool\.0\.uri already reads"):
        plan(local_corpus, backbone, str(tmp_path), pool=[local_corpus.pool[0], twin])


def _screen(tmp_path, digest: str, **quality) -> ScreenPlan:
    (tmp_path / f"{digest[:4]}.txt").write_text(digest + "\n")
    return ScreenPlan.load([BlocklistSpec(name="known", uri=str(tmp_path / f"{digest[:4]}.txt"), kind="sha256")],
                           QualityConfig(**quality))


def test_filters_key_the_pool_entries_and_leave_the_robot_ones_and_a_run_without_them_as_before(
        local_corpus, backbone, tmp_path):
    cache = str(tmp_path / "cache")
    bare = plan(local_corpus, backbone, cache)
    spec, shard = local_corpus.pool[0], bare.pool[0].shard_uri
    assert bare.pool[0].entry == bare.cache.entry(spec, shard)  # no filters: the key it always had
    assert ScreenPlan.load([], QualityConfig(min_clip_score=0.2)) is None  # vector thresholds need no new key
    screen = _screen(tmp_path, "ab" * 32, min_side=8)
    filtered = preflight(pool=local_corpus.pool[:1], robot=local_corpus.robot[:1], backbone_spec=backbone,
                         scorer_config=ScorerConfig(), cache_at=Location(cache), storage=None, screen=screen)
    assert {s.entry for s in filtered.pool}.isdisjoint({s.entry for s in bare.pool})
    assert [s.entry for s in filtered.robot] == [s.entry for s in bare.robot]
    assert all(j.screened == (j.spec.name == spec.name) for j in filtered.todo)
    keys = {screen.key(), _screen(tmp_path, "cd" * 32, min_side=8).key(), _screen(tmp_path, "ab" * 32).key(),
            _screen(tmp_path, "ab" * 32, min_side=16).key()}
    assert len(keys) == 4  # the list's content and every batch threshold change it
    assert _screen(tmp_path, "ab" * 32, min_side=8, min_clip_score=0.3).key() == screen.key()
