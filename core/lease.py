"""A lease object in storage: who holds a name (a run id, a cache entry being embedded) while it works on it.

Taken with a conditional create (``If-None-Match`` on S3, ``O_EXCL`` on disk), so of two claimants one wins. The
holder refreshes its heartbeat; a lease whose process is gone (same host) or whose heartbeat is older than
``stale_after`` seconds (a host killed mid-work) is taken over, so ``kill -9`` and resume still work.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.settings import StorageConfig
from core.storage import filesystem, publish_bytes


class LeaseHeld(RuntimeError):
    """Another live holder has the lease; ``holder`` is what it wrote (``pid``, ``host``, ``heartbeat``)."""

    def __init__(self, uri: str, holder: dict[str, Any]) -> None:
        super().__init__(f"{uri} is held by pid {holder.get('pid')} on {holder.get('host')}")
        self.holder = holder


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@dataclass(frozen=True)
class Lease:
    """The lease object at ``uri``."""

    uri: str
    storage: StorageConfig | None = None
    stale_after: float = 300.0  # seconds without a heartbeat before another host may take the lease over

    @contextlib.contextmanager
    def held(self, heartbeat_every: float | None = None, about: Mapping[str, Any] | None = None
             ) -> Iterator[dict[str, Any] | None]:
        """Hold the lease for the block (``LeaseHeld`` if a live holder has it), its heartbeat kept fresh, and give
        it back at the end, whatever the outcome. ``about`` (what the holder says of itself, e.g. its Prefect flow
        run) is kept in the lease; the block gets the stale lease it took over (None if it was free), so the new
        holder can close what the dead one left open."""
        body = {**(about or {}), "token": uuid.uuid4().hex}
        stale = self._acquire(body)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(body, stop, heartbeat_every or self.stale_after / 5), daemon=True
        )
        beat.start()
        try:
            yield stale
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(FileNotFoundError):
                fs, path = filesystem(self.uri, self.storage)
                fs.rm(path)

    def _body(self, body: dict[str, Any]) -> bytes:
        return json.dumps({**body, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}).encode()

    def _acquire(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fs, path = filesystem(self.uri, self.storage)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        holder: dict[str, Any] = {}
        stale = None
        for _ in range(2):  # a second try only after removing a stale lease
            try:
                fs.pipe_file(path, self._body(body), mode="create")
                return stale
            except FileExistsError:
                try:
                    holder = json.loads(fs.cat_file(path))
                except FileNotFoundError:  # released between the two calls: try again
                    continue
                if not self.is_stale(holder):
                    raise LeaseHeld(self.uri, holder) from None
                fs.rm(path)
                stale = holder
        raise LeaseHeld(self.uri, holder)

    def is_stale(self, holder: dict[str, Any]) -> bool:
        """Whether ``holder`` is gone: its process is dead (same host) or its heartbeat too old."""
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _process_alive(holder["pid"])
        return time.time() - float(holder.get("heartbeat", 0)) > self.stale_after

    def _heartbeat(self, body: dict[str, Any], stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            with contextlib.suppress(OSError):  # a missed beat only brings staleness closer
                # Published whole (a rename on a local disk): a claimant checking the lease never reads half of one.
                publish_bytes(self.uri, self._body(body), self.storage)
