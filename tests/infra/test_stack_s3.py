"""The local stack's S3 server keeps buckets and objects across a restart (moto's request recording, replayed by
`emt stack up`), binary and multipart uploads included."""

from __future__ import annotations

import os

from core.storage import filesystem
from infra import stack
from infra.services import free_port
from infra.stack_setup import prepare_s3, storage


def test_objects_survive_a_restart(tmp_path):
    config = stack.StackConfig(root=str(tmp_path / "stack"), s3_port=free_port())
    (config.home / "s3").mkdir(parents=True)
    (config.home / "logs").mkdir()
    payload, big = os.urandom(300_000), os.urandom(12 * 2**20)
    service = stack.start_service("s3", config)
    try:
        prepare_s3(config)
        fs, _ = filesystem("s3://", storage(config))
        fs.pipe({"emt-demo/a/x.bin": payload, "emt-demo/big.bin": big})
    finally:
        stack.stop(service)
    assert not stack.port_open(config.s3_port)
    service = stack.start_service("s3", config)
    try:
        prepare_s3(config)  # replays the recording
        fs, _ = filesystem("s3://", storage(config))
        fs.invalidate_cache()
        assert fs.cat_file("emt-demo/a/x.bin") == payload
        assert fs.cat_file("emt-demo/big.bin") == big
        assert fs.exists("emt-mlflow")
    finally:
        stack.stop(service)
