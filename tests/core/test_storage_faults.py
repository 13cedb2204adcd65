"""Storage faults on the wire: transient ones are retried by the clients' own retry policy; a storage that cannot be
used is one line naming the setting, found by a probe before any work."""

from __future__ import annotations

import pytest

from core.errors import is_transient
from core.storage import StorageAccessError, check_writable, publish_bytes, read_bytes
from infra.faults import FaultProxy
from infra.s3 import free_port


@pytest.fixture
def proxy(s3):
    p = FaultProxy(upstream=s3.storage.endpoint_url).start()
    yield p
    p.stop()


def test_injected_503s_are_retried_by_the_client(s3, proxy):
    bucket = s3.make_bucket("flaky")
    proxy.fail_every = 3  # every third request answers 503 SlowDown
    storage = s3.storage.model_copy(update={"endpoint_url": proxy.endpoint_url})
    for i in range(3):
        publish_bytes(f"{bucket}/obj-{i}", b"payload %d" % i, storage)
        assert read_bytes(f"{bucket}/obj-{i}", storage) == b"payload %d" % i
    assert proxy.failed >= 3


def test_attempts_follow_the_configured_policy(s3, proxy):
    bucket = s3.make_bucket("flaky")
    proxy.fail_every, proxy.code = 1, "ServiceUnavailable"
    requests = {}
    for attempts in (1, 3):
        proxy.requests = 0
        storage = s3.storage.model_copy(update={"endpoint_url": proxy.endpoint_url, "max_attempts": attempts})
        with pytest.raises(OSError) as err:
            read_bytes(f"{bucket}/anything", storage)
        requests[attempts] = proxy.requests
        assert is_transient(err.value)  # so readers raise it and the shard is read again, never quarantined
    assert requests[3] > requests[1]  # the configured attempts, not a fixed policy


def test_missing_bucket_is_one_line_naming_the_setting(s3):
    message = r"^output_uri \(s3://no-such-bucket/runs\): the bucket does not exist$"
    with pytest.raises(StorageAccessError, match=message):
        check_writable("s3://no-such-bucket/runs", s3.storage, setting="output_uri")


def test_wrong_credentials_are_one_line_naming_the_setting(s3, proxy):
    bucket = s3.make_bucket("guarded")
    proxy.fail_every, proxy.status, proxy.code = 1, 403, "AccessDenied"
    storage = s3.storage.model_copy(update={"endpoint_url": proxy.endpoint_url})
    with pytest.raises(StorageAccessError, match=r"^cache_uri \(s3://guarded/c\): access denied: check storage\.key"):
        check_writable(f"{bucket}/c", storage, setting="cache_uri")


def test_unreachable_endpoint_is_one_line_naming_the_setting(s3):
    storage = s3.storage.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    message = r"^output_uri .*cannot reach the storage endpoint.*storage\.endpoint_url"
    with pytest.raises(StorageAccessError, match=message):
        check_writable("s3://any/runs", storage, setting="output_uri")


def test_unwritable_local_output(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageAccessError, match=r"^output_uri \(.*file/runs\): NotADirectoryError"):
        check_writable(str(tmp_path / "file" / "runs"), None, setting="output_uri")
    check_writable(str(tmp_path / "fresh" / "runs"), None, setting="output_uri")
    assert [p.name for p in (tmp_path / "fresh" / "runs").iterdir()] == []  # the probe is gone
