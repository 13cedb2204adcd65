"""Generate the synthetic corpus: pool shards, robot datasets, ground truth, ``corpus.yaml``, ``_SUCCESS``.

Layout under ``root``::

    pool/{photos,tabletop}/NNNNN.tar       WebDataset shards (img2dataset-style members; + scrapes)
    pool/{docs,charts}/NNNNN.parquet        Parquet shards, columns image (bytes) and text (+ howto)
    planted.parquet                         sample_id, case, copy_of of every planted sample (junk_rate > 0)
    robot/{pick_place,stack_blocks}/        LeRobot v3.0 datasets (image and video camera)
    ground_truth.parquet                    sample_id, source, scene, aligned, alignment for every pool sample
    corpus.yaml                             {"pool": [SourceSpec...], "robot": [SourceSpec...]}
    _SUCCESS                                JSON: generator version, config and counts; written last

Work is split into pool shards and robot episodes, each a pure function of (seed, name, index); they run in a
process pool when ``workers > 1`` and are consumed in order with a bounded window, so memory stays flat
whatever the corpus size and the bytes do not depend on the worker count.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from core.settings import Settings, SourceSpec, StorageConfig
from core.storage import exists, filesystem, join, publish, publish_bytes, read_bytes, write_parquet
from synth.junk import PLANTED
from synth.lerobot import CAMERA, Episode, write_lerobot_dataset
from synth.pool import (
    GROUND_TRUTH,
    MISMATCHED_SOURCES,
    POOL_SOURCES,
    TOYWORLD_SOURCES,
    PoolSource,
    shard_sizes,
    source_spec,
    stable_rng,
    write_pool_shard,
)
from synth.robot import Wording, scripted_episode
from synth.toyworld import expert_episode

GENERATOR_VERSION = 1
FPS = 10
GT_ROW_GROUP = 65_536
ROBOT_DATASETS = (("pick_place", False), ("stack_blocks", True))  # (name = scripted task, camera as video)
T = TypeVar("T")
# Presets: named settings for corpora built to test something. "shortcut": robot instructions worded unlike any
# pool text, plus pool sources whose texts disagree with their images, so a scorer that reads the wording fails.
PRESETS: dict[str, dict[str, Any]] = {"standard": {}, "shortcut": {"robot_wording": "log", "mismatched_sources": True}}
# Left out of the fingerprint at their defaults (corpora generated before they existed still match):
_VARIANTS = {"robot_wording": "instruction", "mismatched_sources": False, "toyworld": False, "junk_rate": 0.0}


class SynthConfig(Settings):
    """What to generate. Everything but ``workers`` determines the output bytes."""

    seed: int = Field(
        0, description="Master seed; every shard and episode derives its own generator from it."
    )
    samples_per_source: int = Field(400, ge=1, description="Samples in each of the four pool sources.")
    shard_size: int = Field(100, ge=1, le=10_000, description="Samples per pool shard (tar or Parquet file).")
    image_size: int = Field(64, ge=16, le=512, description="Width = height of every image, in pixels (even).")
    robot_episodes: int = Field(8, ge=1, description="Episodes in each robot dataset.")
    frames_per_episode: int = Field(20, ge=2, description="Frames per robot episode (at 10 fps).")
    episodes_per_file: int = Field(
        4, ge=1, description="Episodes packed into one LeRobot data (and video) file."
    )
    workers: int = Field(
        1, ge=1, description="Processes rendering shards; the output is the same for any count."
    )
    preset: Literal["standard", "shortcut"] = Field(
        "standard", description="Named settings filled in where not given; shortcut = robot_wording log + "
        "mismatched_sources (a corpus where the text wording alone separates robot from pool)."
    )
    robot_wording: Wording = Field(
        "instruction", description="Robot instructions: instruction (imperative, like real robot data), log "
        "(control-log style unlike any pool text) or caption (the pool's caption format: harmonised texts)."
    )
    mismatched_sources: bool = Field(
        False, description="Add pool sources scrapes (robot-like images, uninformative alt-texts) and howto "
        "(documents, charts and photos under robot-style instructions)."
    )
    junk_rate: float = Field(
        0.0, ge=0, le=0.5, description="Share of each pool shard replaced by planted web junk (synth.junk): blank "
        "and tiny images, placeholder and file-name captions, exact and resized copies of reposted images; with "
        "any junk, also one blocklisted image and a resized copy of it. Listed in planted.parquet."
    )
    toyworld: bool = Field(
        False, description="The toy world: robot data = the scripted expert's episodes in synth.toyworld "
        "(spatial pick tasks, seeds SEED*10000 + i), plus the pool source spatial (spatial QA over rendered "
        "tables, no robot frames), so curation can help only by transfer."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return PRESETS[data["preset"]] | data
        return data

    @field_validator("image_size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (robot videos are encoded as yuv420p)")
        return v

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the output (written to ``_SUCCESS``); variant settings at their defaults
        are left out, so corpora generated before they existed still match."""
        dump = self.model_dump(exclude={"workers", "preset"})
        return {k: v for k, v in dump.items() if k not in _VARIANTS or v != _VARIANTS[k]}

    def pool_sources(self) -> tuple[PoolSource, ...]:
        return (POOL_SOURCES + (MISMATCHED_SOURCES if self.mismatched_sources else ())
                + (TOYWORLD_SOURCES if self.toyworld else ()))

    def robot_datasets(self) -> tuple[tuple[str, bool], ...]:
        """(name, camera as video) of each robot dataset."""
        return (("toyworld", False),) if self.toyworld else ROBOT_DATASETS


class CorpusInfo(BaseModel):
    """Where a generated corpus lives and what it holds."""

    root: str
    pool: list[SourceSpec]
    robot: list[SourceSpec]
    ground_truth_uri: str
    counts: dict[str, int] = Field(description="Pool samples per pool source, frames per robot dataset.")
    planted_uri: str | None = Field(None, description="planted.parquet (synth.junk), when the corpus has junk.")


def _pool_job(job: tuple, *, root_uri: str, seed: int, image_size: int, wording: Wording, junk_rate: float,
              storage: StorageConfig | None):
    source, shard, samples = job
    return write_pool_shard(root_uri, source, shard, samples, seed=seed, image_size=image_size, wording=wording,
                            junk_rate=junk_rate, storage=storage)


def _episode_job(job: tuple[str, int], *, seed: int, image_size: int, frames: int, wording: Wording) -> Episode:
    name, index = job
    if name == "toyworld":  # the expert's episode lasts as long as the task takes
        return expert_episode(seed * 10_000 + index, size=image_size)
    return scripted_episode(name, stable_rng(seed, name, index), size=image_size, frames=frames, wording=wording)


def _ordered_map(
    fn: Callable[[Any], T], items: Iterable, executor: Executor | None, window: int
) -> Iterator[T]:
    """``map(fn, items)`` in order, with at most ``window`` jobs in flight (memory stays bounded)."""
    if executor is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _read_marker(root_uri: str, storage: StorageConfig | None) -> dict[str, Any] | None:
    uri = join(root_uri, "_SUCCESS")
    return json.loads(read_bytes(uri, storage)) if exists(uri, storage) else None


def _clear(root_uri: str, storage: StorageConfig | None) -> None:
    """Remove what an earlier (unfinished or overwritten) generation left, so no stale shard survives."""
    for part in ("_SUCCESS", "corpus.yaml", "ground_truth.parquet", "planted.parquet", "pool", "robot"):
        fs, path = filesystem(join(root_uri, part), storage)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _write_pool(
    root_uri: str, config: SynthConfig, executor: Executor | None, storage: StorageConfig | None
) -> dict[str, int]:
    """Render every pool shard, stream the ground truth into one Parquet file (and the planted samples into
    another, when there are any); return samples per source."""
    counts: dict[str, int] = {}
    jobs = (
        (source.name, shard, n)
        for source in config.pool_sources()
        for shard, n in enumerate(shard_sizes(config.samples_per_source, config.shard_size))
    )
    fn = partial(
        _pool_job, root_uri=root_uri, seed=config.seed, image_size=config.image_size,
        wording=config.robot_wording, junk_rate=config.junk_rate, storage=storage,
    )
    planted: list[pa.Table] = []
    with (
        publish(join(root_uri, "ground_truth.parquet"), storage) as f,
        pq.ParquetWriter(f, GROUND_TRUTH) as gt,
    ):
        buffered: list[pa.Table] = []  # shards are small: gather ~64k rows per row group
        for table, plants in _ordered_map(fn, jobs, executor, window=4 * config.workers):
            planted.append(plants)
            source = table["source"][0].as_py()
            counts[source] = counts.get(source, 0) + table.num_rows
            buffered.append(table)
            if sum(t.num_rows for t in buffered) >= GT_ROW_GROUP:
                gt.write_table(pa.concat_tables(buffered))
                buffered = []
        if buffered:
            gt.write_table(pa.concat_tables(buffered))
    if config.junk_rate > 0:  # a few percent of the pool: small enough to hold at once
        write_parquet(pa.concat_tables([PLANTED.empty_table(), *planted]), join(root_uri, "planted.parquet"), storage)
    return counts


def _write_robot(
    root_uri: str, config: SynthConfig, executor: Executor | None, storage: StorageConfig | None
) -> dict[str, int]:
    """Render the scripted episodes (in parallel) and write each robot dataset; return frames per dataset."""
    counts: dict[str, int] = {}
    fn = partial(
        _episode_job, seed=config.seed, image_size=config.image_size, frames=config.frames_per_episode,
        wording=config.robot_wording,
    )
    for name, video in config.robot_datasets():
        jobs = ((name, e) for e in range(config.robot_episodes))
        info = write_lerobot_dataset(
            join(root_uri, "robot", name),
            _ordered_map(fn, jobs, executor, window=2 * config.workers),
            fps=FPS,
            video=video,
            episodes_per_file=config.episodes_per_file,
            storage=storage,
        )
        counts[name] = info["total_frames"]
    return counts


def generate_corpus(
    root_uri: str, config: SynthConfig, storage: StorageConfig | None = None, *, overwrite: bool = False
) -> CorpusInfo:
    """Write the synthetic corpus under ``root_uri`` (a local path or ``s3://bucket/prefix``).

    A root whose ``_SUCCESS`` records the same settings is returned as it is, without writing. A root finished
    with other settings raises ``FileExistsError`` unless ``overwrite``; an unfinished one is cleared and
    redone. With ``workers > 1`` the worker processes are *spawned*, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    marker = _read_marker(root_uri, storage)
    wanted = {"generator_version": GENERATOR_VERSION, "config": config.fingerprint()}
    if marker is not None:
        if {k: marker.get(k) for k in wanted} == wanted:
            return load_corpus_info(root_uri, storage)
        if not overwrite:
            raise FileExistsError(
                f"{root_uri} holds a corpus generated with other settings ({marker.get('config')}); "
                "pass overwrite=True or choose another root"
            )
    _clear(root_uri, storage)

    # spawn, not fork: forking a process that holds S3 client threads (or Ray's) can deadlock the child
    executor = (
        ProcessPoolExecutor(config.workers, mp_context=get_context("spawn")) if config.workers > 1 else None
    )
    try:
        counts = _write_pool(root_uri, config, executor, storage)
        counts |= _write_robot(root_uri, config, executor, storage)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)

    specs = {
        "pool": [source_spec(root_uri, s) for s in config.pool_sources()],
        "robot": [
            SourceSpec(name=name, format="lerobot", uri=join(root_uri, "robot", name), image_key=CAMERA)
            for name, _ in config.robot_datasets()
        ],
    }
    corpus = {k: [s.model_dump(mode="json", exclude_none=True) for s in v] for k, v in specs.items()}
    publish_bytes(join(root_uri, "corpus.yaml"), yaml.safe_dump(corpus, sort_keys=False).encode(), storage)
    marker = {**wanted, "counts": counts}
    publish_bytes(join(root_uri, "_SUCCESS"), json.dumps(marker, indent=2, sort_keys=True).encode(), storage)
    return CorpusInfo(root=root_uri, ground_truth_uri=join(root_uri, "ground_truth.parquet"), counts=counts,
                      planted_uri=_planted_uri(root_uri, storage), **specs)


def load_corpus_info(root_uri: str, storage: StorageConfig | None = None) -> CorpusInfo:
    """Read back what ``generate_corpus`` wrote under ``root_uri`` (it must have finished)."""
    marker = _read_marker(root_uri, storage)
    if marker is None:
        raise FileNotFoundError(f"{root_uri}: no _SUCCESS marker; the corpus is missing or unfinished")
    corpus = yaml.safe_load(read_bytes(join(root_uri, "corpus.yaml"), storage))
    return CorpusInfo(
        root=root_uri,
        pool=[SourceSpec.model_validate(s) for s in corpus["pool"]],
        robot=[SourceSpec.model_validate(s) for s in corpus["robot"]],
        ground_truth_uri=join(root_uri, "ground_truth.parquet"),
        counts=marker["counts"],
        planted_uri=_planted_uri(root_uri, storage),
    )


def _planted_uri(root_uri: str, storage: StorageConfig | None) -> str | None:
    uri = join(root_uri, "planted.parquet")
    return uri if exists(uri, storage) else None
