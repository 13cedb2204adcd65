"""The curate flow's parameters: one pydantic model (it becomes the Prefect UI form and the YAML config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from core.location import Location
from core.settings import (
    MlflowConfig,
    Settings,
    SourceSpec,
    StorageConfig,
    absolute_uri,
    bind_sources,
    repeated,
)
from estimator.backbones.spec import BackboneSpec
from estimator.config import ScorerConfig
from tasks.filters.blocklist import BlocklistSpec
from tasks.filters.dedup import DedupConfig
from tasks.filters.quality import QualityConfig
from tasks.filters.screen import ScreenPlan
from tasks.ray_config import RayConfig
from tasks.select import SelectionConfig


class FiltersConfig(Settings):
    """What leaves the pool before selection; every filter is off by default, so a run without this section
    curates exactly as before."""

    blocklists: list[BlocklistSpec] = Field(
        default_factory=list, description="Lists of hashes, URLs or domains; a sample on one is never embedded and "
        "is quarantined as blocklist:NAME.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Image and caption thresholds.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Pool-wide exact and semantic dedup.")

    def record(self, screen: ScreenPlan | None) -> dict[str, Any]:
        """What the sidecar keeps of the filters: each list by name, kind, URI and entry count (never an entry),
        the thresholds, dedup, and the screen key that the pool's cache entries carry."""
        lists = [{"name": spec.name, "kind": spec.kind, "uri": spec.uri, "entries": len(entries)}
                 for spec, entries in (screen.lists if screen else ())]
        return {"blocklists": lists, "quality": self.quality.model_dump(mode="json"),
                "dedup": self.dedup.model_dump(mode="json"), "screen_key": screen.key() if screen else None}

    @field_validator("blocklists")
    @classmethod
    def _names_differ(cls, v: list[BlocklistSpec]) -> list[BlocklistSpec]:
        if dup := repeated([spec.name for spec in v]):
            raise ValueError(f"blocklist names must be unique (each is a quarantine reason), repeated: {dup}")
        return v


# k xor fraction, in the JSON schema the Prefect UI validates its form against: a run with both or neither is
# refused when submitted, not on a worker (the model validator below says the same for every other caller).
# Its test of k is by type, not "required", which Prefect strips when it checks a deployment's partial defaults.
# JSON Schema has no error messages of its own: the refusal is a `const` the value cannot equal, so the form shows
# "'give k or fraction, not both' was expected" under fraction, not "0.1 is not of type 'null'".
BOTH = "give k or fraction, not both"
NEITHER = "give k or fraction"
_K_XOR_FRACTION = {
    "if": {"properties": {"k": {"type": "null"}}},  # no k: a fraction is needed
    "then": {"required": ["fraction"],
             "properties": {"fraction": {"if": {"type": "null"}, "then": {"const": NEITHER}}}},
    "else": {"properties": {"fraction": {"if": {"type": "number"}, "then": {"const": BOTH}}}},  # a k: no fraction
}


class CurateParams(Settings):
    """Everything a curation run needs; invalid values are rejected before any work starts."""

    model_config = ConfigDict(json_schema_extra=_K_XOR_FRACTION)

    pool: list[SourceSpec] = Field(min_length=1, description="Web vision-language pool sources to curate.")
    robot: list[SourceSpec] = Field(min_length=1, description="Robot datasets defining the target (positives).")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object storage settings.")
    backbone: BackboneSpec = Field(description="Frozen backbone that embeds every sample.")
    scorer: ScorerConfig = Field(default_factory=ScorerConfig, description="Estimator (default) or a baseline.")
    k: int | None = Field(None, ge=1, description="Keep the top-k pool samples (give k or fraction, not both).")
    fraction: float | None = Field(
        None, gt=0, le=1, description="Keep this fraction of the pool (give k or fraction, not both)."
    )
    per_source_cap: dict[str, int] | None = Field(None, description="Optional: most samples kept per pool source.")
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="How the K are chosen: top_k (default) or a seeded importance "
        "draw, optionally skipping near-duplicates. The manifest's rank stays the score rank; selected marks the K."
    )
    output_uri: str = Field(description="Runs are written under OUTPUT_URI/RUN_ID/ (manifest, errors, estimator).")
    cache_uri: str | None = Field(None, description="Embedding cache; None = OUTPUT_URI/embeddings.")
    run_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        title="Output run id",
        description="Folder of this run under OUTPUT_URI (and its MLflow run name); None = a new timestamped id. "
        "Not the Prefect flow-run name.",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray settings for the embedding and selection jobs.")
    max_error_rate: float = Field(
        0.1, ge=0, le=1, description="Fail the run past this share of input samples quarantined or lost."
    )
    allow_empty_sources: bool = Field(
        False, description="Let a source that matches no shard, or only unreadable ones, count as empty "
        "instead of failing the run."
    )
    train_pool_samples: int = Field(100_000, ge=2, description="Pool samples (uniform) used to train the scorer.")
    embedding_dtype: Literal["float16", "float32"] = Field("float16", description="Dtype of cached vectors.")
    report_per_set: int = Field(
        500, ge=0, description="Embeddings sampled per set for the run's report (MMD, diversity, map); 0 = no report."
    )
    step_cpus: int = Field(
        1, ge=1, description="CPU threads the estimator's fit and the run report compute on in the flow's process "
        "(torch, BLAS and OpenMP pools; restored after each). Unpinned pools take every core of the machine and "
        "collapse when it is busy (measured 15-40x slower); give the flow's process this many CPUs."
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="MLflow tracking of curation runs.")
    filters: FiltersConfig = Field(
        default_factory=FiltersConfig, description="Blocklists, quality thresholds and dedup applied to the pool.")

    @field_validator("output_uri", "cache_uri")
    @classmethod
    def _uri_is_absolute(cls, v: str | None) -> str | None:
        return None if v is None else absolute_uri(v)

    @model_validator(mode="after")
    def _check(self) -> CurateParams:
        if (self.k is None) == (self.fraction is None):
            raise ValueError(NEITHER if self.k is None else BOTH)
        if dup := repeated([s.name for s in self.pool + self.robot]):
            raise ValueError(f"source names must be unique across pool and robot, repeated: {dup}")
        if self.per_source_cap and (unknown := sorted(set(self.per_source_cap) - {s.name for s in self.pool})):
            raise ValueError(f"per_source_cap names unknown pool sources: {unknown}")
        if self.selection.mode == "importance" and self.scorer.method != "estimator":
            raise ValueError("selection.mode: importance draws by exp(score), the estimator's density ratio: "
                             f"set scorer.method to estimator (not {self.scorer.method}) or use top_k")
        bind_sources(self.storage, self.pool, self.robot)  # the sources carry their storage from here on
        return self

    def result_params(self) -> dict:
        """The parameters that decide a run's result: everything but where and how it runs (storage, Ray, MLflow),
        so a finished run asked for again with other *result* parameters is refused rather than returned."""
        return self.model_dump(mode="json", exclude={"storage", "ray", "mlflow"})

    @property
    def cache(self) -> Location:
        """The embedding cache: ``cache_uri``, else OUTPUT_URI/embeddings, on this run's storage."""
        return Location(self.cache_uri or self.output_uri.rstrip("/") + "/embeddings", self.storage)
