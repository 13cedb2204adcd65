"""The data-dependent checks a command runs on its inputs before Prefect, Ray or MLflow start: a source with no
shard, a blocklist that is missing or malformed, a model path with no saved model, a manifest that cannot be read
(a truncated file's footer), a robot set whose episodes leave nothing to train on. Each failure is the error the
flow itself would raise later (the same functions, the same words, naming the field), raised within seconds, so
the command prints one line and no traceback instead of failing after the imports and Prefect's start-up.

The flows keep their own checks: a deployment run from the UI never passes through here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from core.read.lerobot import load_meta
from core.settings import ConfigError, SourceSpec, StorageConfig
from training.config import RobotDataConfig

if TYPE_CHECKING:
    from tasks.filters.blocklist import BlocklistSpec


def check_curate(params: Any) -> None:
    """The curate flow's own preflight (sources listed, backbone and estimator found; no model loaded)."""
    from tasks.curation import preflight

    preflight(
        pool=params.pool,
        robot=params.robot,
        backbone_spec=params.backbone,
        scorer_config=params.scorer,
        cache_at=params.cache,
        storage=params.storage,
        allow_empty_sources=params.allow_empty_sources,
        actor_gpus=params.ray.actor_gpus,
    )
    check_blocklists(params.filters.blocklists, params.storage)


def check_blocklists(specs: list[BlocklistSpec], storage: StorageConfig | None) -> None:
    """Every list reads and parses, so a missing file or a bad line fails now, not in the embedding job."""
    from tasks.filters.blocklist import Blocklists

    for index, spec in enumerate(specs):
        try:
            Blocklists.load([spec], storage)
        except (OSError, ValueError) as err:
            raise ConfigError(f"filters.blocklists.{index}.uri: {err}") from None


def check_midtrain(params: Any) -> None:
    """The base model is a saved model; the manifest reads (its footer and its sidecar) and selects rows."""
    from tasks.training_run import check_manifest_uri, check_model

    check_model(params.model, params.storage)
    check_manifest_uri(params.manifest)


def check_finetune(params: Any, *, model: bool = True) -> None:
    """The base model (unless the pipeline makes it: ``model=False``) and the robot datasets: readable, with
    enough episodes."""
    from tasks.training_run import check_model, check_robot_sources

    if model:
        check_model(params.model, params.storage)
    check_robot_sources(params.robot.sources, params.storage)
    check_episodes(params.robot, params.storage)


def check_pipeline(params: Any) -> None:
    """Each step's inputs that exist before the run: curation's, the VLM to mid-train, the robot datasets."""
    from tasks.training_run import check_model

    check_curate(params.curate)
    check_model(params.midtrain.model, params.midtrain.storage, field_name="midtrain.model")
    check_finetune(params.finetune, model=False)


def check_episodes(robot: RobotDataConfig, storage: StorageConfig | None) -> None:
    """From the datasets' metadata alone: the held-out split leaves a training episode and every episode covers an
    action chunk — the rules ``training.robot_data.RobotEpisodes`` applies once it has read every action."""
    lengths: list[tuple[str, int, int]] = []
    for i, spec in enumerate(robot.sources):
        lengths += [(spec.name, e["episode_index"], e["length"]) for e in _meta(spec, storage, i).episodes]
    if not lengths:
        raise ConfigError("robot.sources: the datasets hold no episode")
    held = math.ceil(robot.heldout_fraction * len(lengths))
    if held >= len(lengths):
        raise ConfigError(f"robot.heldout_fraction {robot.heldout_fraction} holds out {held} of {len(lengths)} "
                          "episodes: no training episode is left")
    name, episode, frames = min(lengths, key=lambda row: row[2])
    if robot.chunk_size > frames:
        raise ConfigError(f"robot.chunk_size {robot.chunk_size} is longer than the shortest episode "
                          f"({name} episode {episode}: {frames} frames)")


def _meta(spec: SourceSpec, storage: StorageConfig | None, index: int):
    try:
        return load_meta(spec.uri, storage, image_key=spec.image_key)
    except (OSError, ValueError) as err:
        raise ConfigError(f"robot.sources.{index}.uri: {err}") from None
