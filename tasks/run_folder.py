"""A run's folder, ``OUTPUT_URI/RUN_ID/``: every run kind (curate, midtrain, finetune) writes its outputs there and
publishes ``_SUCCESS`` last, so a finished run id is recognised and never redone.

A run id is held by one run at a time: ``claim()`` creates a lease object with a conditional create (``If-None-Match``
on S3, ``O_EXCL`` on disk), so a second run with the same name is refused instead of overwriting the first's files.
The holder refreshes the lease's heartbeat; a lease whose process is gone (same host) or whose heartbeat is older
than ``stale_after`` seconds (a host killed mid-run) is taken over, so ``kill -9`` and resume still works. The lease
also carries what the holder says about itself (its Prefect flow run), so the run taking over can close the killed
run's records.
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

from pydantic import BaseModel

from core.settings import StorageConfig
from core.storage import exists, filesystem, join, publish_bytes, read_bytes

SUCCESS = "_SUCCESS"
LEASE = "_lease.json"


class RunRefused(ValueError):
    """The run id cannot be used for this run (held by another run, or finished with other parameters)."""


def new_run_id() -> str:
    """A fresh, sortable run id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@dataclass(frozen=True)
class RunFolder:
    """Where one run's files live, its lease and its completion marker."""

    output_uri: str
    run_id: str
    storage: StorageConfig | None = None
    stale_after: float = 300.0  # seconds without a heartbeat before another host may take the lease over

    @classmethod
    def open(cls, output_uri: str, run_name: str | None, storage: StorageConfig | None = None) -> RunFolder:
        return cls(output_uri=output_uri, run_id=run_name or new_run_id(), storage=storage)

    @property
    def uri(self) -> str:
        return join(self.output_uri, self.run_id)

    def path(self, *parts: str) -> str:
        return join(self.uri, *parts)

    def is_complete(self) -> bool:
        return exists(self.path(SUCCESS), self.storage)

    def write_json(self, name: str, value: BaseModel | dict[str, Any]) -> str:
        """Publish ``value`` as ``name`` in the run folder; returns its URI."""
        data = value.model_dump_json(indent=1) if isinstance(value, BaseModel) else json.dumps(value, indent=1)
        uri = self.path(name)
        publish_bytes(uri, data.encode(), self.storage)
        return uri

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads(read_bytes(self.path(name), self.storage))

    def read_bytes(self, name: str) -> bytes:
        return read_bytes(self.path(name), self.storage)

    def refuse_other_params(self, given: dict[str, Any], name: str = "params.json") -> None:
        """Raise ``RunRefused`` if the finished run recorded in ``name`` was made with other values of ``given``'s
        keys (a finished run id is only ever answered with its own stored result)."""
        stored = self.read_json(name) if exists(self.path(name), self.storage) else {}
        changed = sorted(k for k, v in given.items() if json.dumps(stored.get(k), sort_keys=True)
                         != json.dumps(v, sort_keys=True))
        if changed:
            raise RunRefused(
                f"run {self.run_id} already finished at {self.uri} with other parameters ({', '.join(changed)} "
                "differ): choose another run_name, or give the same parameters to get its stored result"
            )

    def clean_temporaries(self) -> list[str]:
        """Delete the half-written ``.tmp-*`` objects a crashed writer left in the run folder; returns them."""
        fs, root = filesystem(self.uri, self.storage)
        if not fs.exists(root):
            return []
        stale = [p for p in fs.find(root) if posixpath.basename(p).startswith(".tmp-")]
        for path in stale:
            fs.rm(path)
        return stale

    @contextlib.contextmanager
    def claim(
        self, heartbeat_every: float | None = None, holder: Mapping[str, Any] | None = None
    ) -> Iterator[dict[str, Any] | None]:
        """Hold the run id for the block: refuse it if another live run holds it, clean what a crashed holder left,
        keep the lease's heartbeat fresh, and give it back at the end (whatever the outcome). ``holder`` is kept in
        the lease; the block gets the stale lease it took over (None if the id was free), to close that run."""
        token = uuid.uuid4().hex
        body = {**(holder or {}), "token": token}
        stale = self._acquire(body)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(body, stop, heartbeat_every or self.stale_after / 5), daemon=True
        )
        beat.start()
        try:
            self.clean_temporaries()
            yield stale
            self.clean_temporaries()
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(FileNotFoundError):
                fs, path = filesystem(self.path(LEASE), self.storage)
                fs.rm(path)

    def mark_complete(self) -> None:
        """Publish the completion marker: written last, after every other output of the run."""
        publish_bytes(self.path(SUCCESS), b"", self.storage)

    def _lease_body(self, body: dict[str, Any]) -> bytes:
        return json.dumps({**body, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}).encode()

    def _acquire(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fs, path = filesystem(self.path(LEASE), self.storage)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        stale = None
        for _ in range(2):  # a second try only after removing a stale lease
            try:
                fs.pipe_file(path, self._lease_body(body), mode="create")
                return stale
            except FileExistsError:
                try:
                    holder = json.loads(fs.cat_file(path))
                except FileNotFoundError:  # released between the two calls: try again
                    continue
                if not self._is_stale(holder):
                    raise RunRefused(
                        f"run {self.run_id} is in use by another run (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, last seen {time.time() - holder.get('heartbeat', 0):.0f} s ago): "
                        "wait for it to finish or choose another run_name"
                    ) from None
                fs.rm(path)
                stale = holder
        raise RunRefused(f"run {self.run_id}: could not take its lease at {self.path(LEASE)}; try again")

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _process_alive(holder["pid"])
        return time.time() - float(holder.get("heartbeat", 0)) > self.stale_after

    def _heartbeat(self, body: dict[str, Any], stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            with contextlib.suppress(OSError):  # a missed beat only brings staleness closer
                # Published whole (a rename on a local disk): a run checking the lease never reads a half-written one.
                publish_bytes(self.path(LEASE), self._lease_body(body), self.storage)
