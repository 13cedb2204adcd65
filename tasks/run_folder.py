"""A run's folder, ``OUTPUT_URI/RUN_ID/``: every run kind (curate, midtrain, finetune) writes its outputs there and
publishes ``_SUCCESS`` last, so a finished run id is recognised and never redone."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from core.settings import StorageConfig
from core.storage import exists, join, publish_bytes, read_bytes

SUCCESS = "_SUCCESS"


def new_run_id() -> str:
    """A fresh, sortable run id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class RunFolder:
    """Where one run's files live, and its completion marker."""

    output_uri: str
    run_id: str
    storage: StorageConfig | None = None

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

    def mark_complete(self) -> None:
        """Publish the completion marker: written last, after every other output of the run."""
        publish_bytes(self.path(SUCCESS), b"", self.storage)
