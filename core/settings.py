"""Settings shared by every stage, and the one way to load any settings model from YAML.

Every setting is a pydantic model: a bad value is rejected before any work starts, with a message that names
the offending field (``pool.1.uri: ...``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

M = TypeVar("M", bound=BaseModel)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def repeated(names: list[str]) -> list[str]:
    """The names that occur more than once in ``names``, sorted (what a uniqueness check reports)."""
    return sorted({n for n in names if names.count(n) > 1})


def absolute_uri(uri: str) -> str:
    """A local path made absolute (a trailing ``/`` kept), so every URI a run records resolves from any working
    directory and in later training runs; a URI with a scheme (``s3://``, ``file://``) is kept as it is."""
    if _SCHEME.match(uri):
        return uri
    path = os.path.abspath(os.path.expanduser(uri))
    return path + "/" if uri.endswith("/") and path != "/" else path


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names every offending field."""


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors (a typo never silently falls back to a default)."""

    model_config = ConfigDict(extra="forbid")


class StorageConfig(Settings):
    """Where object storage lives. Unset fields fall back to the standard AWS variables
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), which
    botocore reads itself."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO; None = AWS or env."
    )
    key: SecretStr | None = Field(None, description="Access key id; None = AWS credential chain.")
    secret: SecretStr | None = Field(None, description="Secret access key; None = AWS credential chain.")
    region: str | None = Field(None, description="Region; None = AWS_DEFAULT_REGION.")
    anon: bool = Field(False, description="Anonymous access (public buckets).")
    retry_mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard",
        description="botocore retry mode for transient faults (5xx, SlowDown, throttling, timeouts, resets), with "
        "exponential backoff; adaptive also slows the client down while the service throttles it.",
    )
    max_attempts: int = Field(
        8, ge=1, description="botocore attempts per request, the first included (s3fs adds its own few retries "
        "of a response body cut short)."
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a connection to the endpoint.")
    read_timeout: float = Field(60.0, gt=0, description="Seconds to wait for a response.")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/]+", v):
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:9000")
        return v

    def s3_options(self) -> dict[str, Any]:
        """fsspec/s3fs storage options for this configuration: the retry policy, and whatever is set of endpoint,
        credentials and region (unset ones are left to botocore's environment and credential chain)."""
        opts: dict[str, Any] = {
            "config_kwargs": {
                "retries": {"mode": self.retry_mode, "max_attempts": self.max_attempts},
                "connect_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
            },
        }
        if self.anon:
            opts["anon"] = True
        if self.key is not None:
            opts["key"] = self.key.get_secret_value()
        if self.secret is not None:
            opts["secret"] = self.secret.get_secret_value()
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            opts["client_kwargs"] = client
        return opts


class SourceSpec(Settings):
    """One input dataset: a sharded pool source or a robot dataset.

    The settings that reach it travel with it once bound (``bind``; the configs holding sources bind theirs at
    validation): pickled to workers, never written out, so a sidecar or a form never holds a credential."""

    _storage: StorageConfig | None = PrivateAttr(None)

    name: str = Field(description="Source name; becomes the `source` column and the sample_id prefix.")
    format: Literal["webdataset", "parquet", "lerobot"] = Field(description="How the shards are stored.")
    uri: str = Field(
        description="Shards as a prefix (s3://b/pool/), a glob (s3://b/pool/*.tar) or braces "
        "(s3://b/pool/{00000..00099}.tar); for lerobot, the dataset root."
    )
    image_column: str = Field("image", description="parquet: column with encoded image bytes.")
    text_column: str = Field("text", description="parquet: column with the text.")
    image_key: str | None = Field(None, description="lerobot: camera feature to use; None = the first one.")
    frame_stride: int = Field(1, ge=1, description="lerobot: keep every n-th frame of each episode.")

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be letters, digits, '_', '.' or '-' (it becomes part of every sample_id)")
        return v

    @field_validator("uri")
    @classmethod
    def _uri_is_absolute(cls, v: str) -> str:
        return absolute_uri(v)

    def bind(self, storage: StorageConfig | None) -> SourceSpec:
        """A copy of this source reached with ``storage`` (None: default settings)."""
        bound = self.model_copy()
        bound._storage = storage
        return bound

    @property
    def storage(self) -> StorageConfig | None:
        """The settings that reach ``uri`` (``core.location.Location(spec.uri, spec.storage)``)."""
        return self._storage


def bind_sources(storage: StorageConfig, *groups: list[SourceSpec]) -> None:
    """Bind every source of ``groups`` to ``storage`` in place (a config's validator: its sources then carry it)."""
    for group in groups:
        group[:] = [spec.bind(storage) for spec in group]


def format_validation_error(err: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each starting with the dotted path of the field."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{prefix}{loc}: {e['msg']}")
    return "\n".join(lines)


def parse_config(model: type[M], data: Any, *, origin: str = "config") -> M:
    """Validate ``data`` as ``model``; raise ``ConfigError`` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid {origin}:\n{format_validation_error(err)}") from None


def load_yaml(path: str | Path) -> Any:
    """A YAML file's contents; ``ConfigError`` if it cannot be read or parsed."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None


def load_config(model: type[M], path: str | Path) -> M:
    """Load a YAML file as ``model`` (see ``parse_config``)."""
    return parse_config(model, load_yaml(path), origin=f"config {path}")


class CorpusConfig(Settings):
    """A set of sources: the web pool to curate and the robot datasets that define the target."""

    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage settings.")
    pool: list[SourceSpec] = Field(default_factory=list, description="Web vision-language pool sources.")
    robot: list[SourceSpec] = Field(default_factory=list, description="Robot datasets (LeRobot v3).")

    @field_validator("pool", "robot")
    @classmethod
    def _unique_names(cls, v: list[SourceSpec]) -> list[SourceSpec]:
        if dup := repeated([s.name for s in v]):
            raise ValueError(f"source names must be unique, repeated: {dup}")
        return v

    @model_validator(mode="after")
    def _bind(self) -> CorpusConfig:
        bind_sources(self.storage, self.pool, self.robot)
        return self


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class MlflowConfig(Settings):
    """Where runs (curation, mid-training, fine-tuning) are tracked in MLflow."""

    enabled: bool = Field(True, description="Record each run in MLflow.")
    tracking_uri: str | None = Field(
        None,
        description=f"MLflow tracking URI; None = MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI} "
        "(SQLite in the working directory).",
    )
    experiment: str = Field("emt-curation", description="MLflow experiment the runs are filed under.")

    def resolved_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
