"""The parameters of ``tasks.export`` (pydantic, like every setting): importable without the curation stack, so
``emt export`` checks them before it imports anything heavy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.location import Location
from core.settings import Settings, StorageConfig, absolute_uri


class ExportOptions(Settings):
    """How an export is cut and run (the command line's options)."""

    samples_per_shard: int = Field(10_000, ge=1, le=1_000_000, description="Samples per output tar.")
    workers: int = Field(4, ge=1, le=256, description="threads: output shards written at once.")
    executor: Literal["threads", "ray"] = Field(
        "threads", description="threads: in this process; ray: one Ray task per output shard on the cluster."
    )
    ray_address: str | None = Field(None, description="ray: cluster address; None = RAY_ADDRESS, else a local Ray.")
    ray_cpus: float = Field(0.5, gt=0, description="ray: CPUs each shard task reserves.")
    fetch_batch: int = Field(1_000, ge=1, description="Samples fetched at once with range reads (bounds memory).")


class ExportParams(ExportOptions):
    """What to export and where."""

    manifest_uri: str = Field(description="The curation run's manifest (.../RUN/manifest.parquet).")
    output_uri: str = Field(description="Where the shards go (a path or s3://bucket/prefix).")
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @field_validator("manifest_uri", "output_uri")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return absolute_uri(v).rstrip("/")

    @model_validator(mode="after")
    def _apart(self) -> ExportParams:
        if self.output_uri == self.manifest_uri or self.output_uri.startswith(self.manifest_uri + "/"):
            raise ValueError(f"output_uri: {self.output_uri} is the manifest itself; give the export its own prefix")
        return self

    @property
    def manifest(self) -> Location:
        return Location(self.manifest_uri, self.storage)

    @property
    def output(self) -> Location:
        return Location(self.output_uri, self.storage)
