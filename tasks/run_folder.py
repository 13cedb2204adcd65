"""A run's folder, ``OUTPUT_URI/RUN_ID/``: every run kind (curate, midtrain, finetune) writes its outputs there and
publishes ``_SUCCESS`` last, so a finished run id is recognised and never redone.

A run id is held by one run at a time: ``claim()`` takes its lease (``core.lease``: a conditional create, a
heartbeat, a stale holder taken over), so a second run with the same name is refused instead of overwriting the
first's files, and ``kill -9`` and resume still works. The lease also carries what the holder says about itself (its
Prefect flow run), so the run taking over can close the killed run's records.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.lease import Lease, LeaseHeld
from core.location import Location

SUCCESS = "_SUCCESS"
LEASE = "_lease.json"


class RunRefused(ValueError):
    """The run id cannot be used for this run (held by another run, or finished with other parameters)."""


def new_run_id() -> str:
    """A fresh, sortable run id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class RunFolder:
    """Where one run's files live (``location``: ``OUTPUT_URI/RUN_ID`` on its storage), its lease and its
    completion marker."""

    location: Location
    run_id: str
    stale_after: float = 300.0  # seconds without a heartbeat before another host may take the lease over

    @classmethod
    def open(cls, output: Location, run_name: str | None) -> RunFolder:
        """The folder of run ``run_name`` (a fresh id if None) under ``output``."""
        run_id = run_name or new_run_id()
        return cls(output.join(run_id), run_id)

    @property
    def uri(self) -> str:
        return self.location.uri

    def path(self, *parts: str) -> str:
        """The URI of ``parts`` in the folder (what a run records and hands to its writers)."""
        return self.location.join(*parts).uri

    def is_complete(self) -> bool:
        return self.location.join(SUCCESS).exists()

    def write_json(self, name: str, value: BaseModel | dict[str, Any]) -> str:
        """Publish ``value`` as ``name`` in the run folder; returns its URI."""
        data = value.model_dump_json(indent=1) if isinstance(value, BaseModel) else json.dumps(value, indent=1)
        target = self.location.join(name)
        target.publish_bytes(data.encode())
        return target.uri

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.read_bytes(name))

    def read_bytes(self, name: str) -> bytes:
        return self.location.join(name).read_bytes()

    def refuse_other_params(self, given: dict[str, Any], name: str = "params.json") -> None:
        """Raise ``RunRefused`` if the finished run recorded in ``name`` was made with other values of ``given``'s
        keys (a finished run id is only ever answered with its own stored result)."""
        stored = self.read_json(name) if self.location.join(name).exists() else {}
        changed = sorted(k for k, v in given.items() if json.dumps(stored.get(k), sort_keys=True)
                         != json.dumps(v, sort_keys=True))
        if changed:
            raise RunRefused(
                f"run {self.run_id} already finished at {self.uri} with other parameters ({', '.join(changed)} "
                "differ): choose another run_name, or give the same parameters to get its stored result"
            )

    def clean_temporaries(self) -> list[str]:
        """Delete the half-written ``.tmp-*`` objects a crashed writer left in the run folder; returns them."""
        fs, root = self.location.fs, self.location.path
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
        """Hold the run id for the block (``core.lease``): refuse it if another live run holds it, clean what a
        crashed holder left, and give it back at the end (whatever the outcome). ``holder`` is kept in the lease;
        the block gets the stale lease it took over (None if the id was free), to close that run."""
        with contextlib.ExitStack() as stack:
            try:
                stale = stack.enter_context(
                    Lease(self.path(LEASE), self.location.storage, self.stale_after).held(heartbeat_every, holder))
            except LeaseHeld as err:
                held = err.holder
                raise RunRefused(
                    f"run {self.run_id} is in use by another run (pid {held.get('pid')} on {held.get('host')}, "
                    f"last seen {time.time() - held.get('heartbeat', 0):.0f} s ago): wait for it to finish or "
                    "choose another run_name"
                ) from None
            self.clean_temporaries()
            yield stale
            self.clean_temporaries()

    def mark_complete(self) -> None:
        """Publish the completion marker: written last, after every other output of the run."""
        self.location.join(SUCCESS).publish_bytes(b"")
