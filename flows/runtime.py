"""The run-time services a flow attaches to, read from configuration and the environment once, at the top."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the Ray cluster already initialised in this process, else connect to ``address`` (or ``RAY_ADDRESS``),
    else start a local Ray for the duration of the block."""
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS")
    # A local Ray stays on loopback: nothing it starts listens on the machine's network addresses.
    local = {
        "_temp_dir": os.environ.get("EMT_RAY_TMPDIR", tempfile.gettempdir() + "/emt-ray"),
        "include_dashboard": False,
        "_node_ip_address": "127.0.0.1",
    }
    kwargs = {} if target else local
    ray.init(address=target, log_to_driver=False, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()
