"""A source whose storage fails at preflight (access denied, missing bucket, endpoint down) is one line naming its
field (``pool.0.uri``), never a quarantined source or a traceback."""

from __future__ import annotations

import pytest

from core.location import Location
from core.storage import StorageAccessError
from estimator.backbones.tiny import save_tiny_backbone
from estimator.scorer import ScorerConfig
from infra.faults import FaultProxy
from infra.s3 import free_port
from tasks.curation import preflight


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_tiny_backbone("open_clip", str(tmp_path_factory.mktemp("model")), seed=0)


def _preflight(pool, robot, storage, backbone, tmp_path):
    return preflight(
        pool=pool,
        robot=robot,
        backbone_spec=backbone,
        scorer_config=ScorerConfig(),
        cache_at=Location(str(tmp_path / "cache")),
        storage=storage,
    )


def test_denied_source_names_its_field(s3, s3_corpus, local_corpus, backbone, tmp_path):
    proxy = FaultProxy(upstream=s3.storage.endpoint_url, fail_every=1, status=403, code="AccessDenied").start()
    try:
        storage = s3.storage.model_copy(update={"endpoint_url": proxy.endpoint_url})
        pool = [local_corpus.pool[0], s3_corpus.pool[1].bind(storage)]  # the second pool source is on the denied S3
        message = rf"^pool\.1\.uri \({s3_corpus.pool[1].uri.replace('*', '.')}.*\): access denied: check storage\.key"
        with pytest.raises(StorageAccessError, match=message):
            _preflight(pool, local_corpus.robot, storage, backbone, tmp_path)
    finally:
        proxy.stop()


def test_missing_bucket_and_unreachable_endpoint_name_the_field(s3, local_corpus, backbone, tmp_path):
    robot = [local_corpus.robot[0].model_copy(update={"uri": "s3://no-such-bucket/robot"}).bind(s3.storage)]
    with pytest.raises(StorageAccessError, match=r"^robot\.0\.uri \(s3://no-such-bucket/robot\): the bucket does not"):
        _preflight(local_corpus.pool, robot, s3.storage, backbone, tmp_path)
    down = s3.storage.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 1})
    pool = [local_corpus.pool[0].model_copy(update={"uri": "s3://any/shards/"}).bind(down)]
    with pytest.raises(StorageAccessError, match=r"^pool\.0\.uri \(s3://any/shards/\): cannot reach the storage"):
        _preflight(pool, local_corpus.robot, down, backbone, tmp_path)


def test_shards_are_looked_up_together(local_corpus, backbone, tmp_path, monkeypatch):
    """The preflight's 3-5 storage requests per shard run for many shards at once (tasks.cache.threaded), not one
    shard after another: at 200k shards and 20 ms a request, serial lookups alone took hours (bench capacity)."""
    import threading
    import time

    import tasks.curation as curation

    look_up, lock, state = curation._look_up, threading.Lock(), {"now": 0, "most": 0}

    def slow(*args):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)  # a round trip
        try:
            return look_up(*args)
        finally:
            with lock:
                state["now"] -= 1

    one_by_one = _preflight(local_corpus.pool, local_corpus.robot, None, backbone, tmp_path)
    monkeypatch.setattr(curation, "_look_up", slow)
    plan = _preflight(local_corpus.pool, local_corpus.robot, None, backbone, tmp_path)
    shards = len(plan.pool) + len(plan.robot)
    assert shards > 4 and state["most"] > 1, (shards, state)
    assert plan.pool == one_by_one.pool and plan.robot == one_by_one.robot  # the same plan, in listing order
