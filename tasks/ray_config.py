"""Where and how wide the Ray jobs of a curation run (embedding, selection) run: one settings model, read by the
flow's parameters and handed whole to the jobs."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from core.settings import Settings


def _retired_in_schema(schema: dict[str, Any]) -> None:
    """Keep ``distributed_selection`` in the JSON schema (as deprecated), so Prefect's own check of a deployment's
    stored parameters lets an old run through to the deprecation line instead of refusing it as unknown."""
    schema["properties"]["distributed_selection"] = {
        "type": "boolean", "deprecated": True, "title": "Distributed selection (retired)",
        "description": "Retired and ignored: every run selects with the one selection engine.",
    }


class RayConfig(Settings):
    """Where and how wide the embedding and selection jobs run."""

    model_config = ConfigDict(json_schema_extra=_retired_in_schema)

    address: str | None = Field(None, description="Ray cluster address; None = RAY_ADDRESS, else a local Ray.")
    embed_actors: int = Field(1, ge=1, description="Embedding actors (each holds one copy of the backbone).")
    actor_cpus: float | None = Field(
        None, gt=0, description="CPUs reserved per embedding actor, and its torch threads (rounded up). None: 1 with "
        "GPUs; on CPUs only, every CPU the readers and any preparing tasks leave (tasks.embed_shards.embed_cpus).")
    actor_gpus: float = Field(0.0, ge=0, description="GPUs per embedding actor (1 on a GPU cluster).")
    read_cpus: float | None = Field(None, gt=0, description="CPUs each embedding actor reserves beside actor_cpus "
                                    "for reading its shard (on a thread of the actor). None: 0.5 with GPUs, 0.25 on "
                                    "CPUs only.")
    prepare: Literal["auto", "actor", "tasks"] = Field(
        "auto", description="Where images are decoded and preprocessed. tasks: Ray CPU tasks of prepare_cpus each, on "
        "the CPUs the actors leave, so a GPU actor only runs forward passes. actor: a thread of the embedding actor, "
        "overlapping its forward passes, on its own CPUs (no hand-off to other processes). auto: tasks with GPUs, "
        "the actor on CPUs only.")
    prepare_cpus: float | None = Field(None, gt=0, description="CPUs per decode + preprocess task (prepare: tasks). "
                                       "These tasks run on the CPUs the actors leave free, anywhere in the cluster: "
                                       "on a GPU node leave most cores free (1 per task is typical). None: 0.5 with "
                                       "GPUs; on CPUs only 0.25 up to 4 CPUs, else 1.")
    embed_batch_size: int = Field(64, ge=1, description="Samples per backbone forward pass.")
    read_batch_size: int = Field(256, ge=1, description="Samples per batch read from a shard.")
    shards_per_manifest_file: int = Field(
        64, ge=1, description="Selection: pool shards per manifest file (and per scoring task). The manifest is a "
        "directory of Parquet files; its content hash does not depend on this."
    )
    selection_workers: int | None = Field(
        None, ge=1, description="Selection: most Ray tasks at once (None = as many as the cluster runs; 1 on a "
        "laptop gives the same manifest)."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        """Accept configs written for the two selection engines: ``distributed_selection`` chose between them, and
        there is one engine now (the distributed one, which carries every selection feature)."""
        if isinstance(data, dict) and "distributed_selection" in data:
            data = {k: v for k, v in data.items() if k != "distributed_selection"}
            warnings.warn("ray.distributed_selection is deprecated and ignored: every run selects with the one "
                          "selection engine (Ray tasks; set ray.selection_workers and ray.shards_per_manifest_file "
                          "to size it). Remove the field from the config.", FutureWarning, stacklevel=2)
        return data

    @model_validator(mode="after")
    def _prepare_cpus_need_tasks(self) -> RayConfig:
        if self.prepare == "actor" and self.prepare_cpus is not None:
            raise ValueError("ray.prepare_cpus sizes the preparing tasks, and ray.prepare: actor runs none (the actor "
                             "decodes on its own CPUs, ray.actor_cpus): drop ray.prepare_cpus or set ray.prepare: "
                             "tasks")
        return self
