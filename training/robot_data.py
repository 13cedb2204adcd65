"""Robot samples from LeRobot v3 datasets: a camera frame, the episode's instruction and the chunk of H
actions from that frame on (padded and masked past the episode's end), normalised with statistics of the
training episodes. Episodes, never frames, are split between training and held-out (seeded).

Actions of every episode are read once (a few floats per frame) to fit the statistics and cut chunks; frames
are streamed from the reader, one data file at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
import torch

from core.settings import StorageConfig
from core.storage import filesystem
from training.actions import ActionStats, resolve_gripper
from training.chat import ChatEncoder, decode_image
from training.config import RobotDataConfig
from training.sources import LeRobotMeta, Quarantine, data_files, load_meta, read_robot_steps
from training.stream import BatchStream, Position, Skipped, SkipSample

EpisodeKey = tuple[str, int]  # (dataset name, episode_index)


def _episode_actions(meta: LeRobotMeta, storage: StorageConfig | None) -> dict[int, np.ndarray]:
    """Every episode's actions [length, A], ordered by frame_index (only three small columns are read)."""
    parts: dict[int, list[tuple[int, list[float]]]] = {}
    for uri in data_files(meta):
        fs, path = filesystem(uri, storage)
        with fs.open(path, "rb") as f:
            table = pq.read_table(f, columns=["episode_index", "frame_index", "action"], pre_buffer=False)
        for ep, fr, act in zip(*(table[c].to_pylist() for c in table.column_names), strict=True):
            parts.setdefault(ep, []).append((fr, act))
    return {ep: np.asarray([a for _, a in sorted(rows)], np.float32) for ep, rows in parts.items()}


class RobotEpisodes:
    """The robot datasets' episodes: their actions, the held-out split and the normalisation statistics.

    Raises a ValueError naming the field for: datasets with different action sizes, an action size other than
    ``action_dim`` (the head's or a resumed checkpoint's), a gripper index outside the action, a chunk longer
    than the shortest episode and a split that leaves no training episode.
    """

    def __init__(self, config: RobotDataConfig, storage: StorageConfig | None = None, *,
                 gripper_index: int | None = -1, action_dim: int | None = None) -> None:
        self.config, self.storage = config, storage
        self.metas = {s.name: load_meta(s.uri, storage, image_key=s.image_key) for s in config.sources}
        self.strides = {s.name: s.frame_stride for s in config.sources}
        self.actions: dict[EpisodeKey, np.ndarray] = {
            (name, ep): a for name, meta in self.metas.items() for ep, a in _episode_actions(meta, storage).items()}
        if not self.actions:
            raise ValueError("robot.sources: the datasets hold no episode")
        dims = {name: a.shape[1] for (name, _), a in self.actions.items()}
        if len(set(dims.values())) > 1:
            raise ValueError(f"robot.sources: the datasets' action sizes differ: {dims}")
        self.action_dim = next(iter(dims.values()))
        if action_dim is not None and action_dim != self.action_dim:
            raise ValueError(f"head.action_dim is {action_dim} but the robot datasets' actions have "
                             f"{self.action_dim} dimensions")
        self.gripper_index = resolve_gripper(gripper_index, self.action_dim)
        shortest = min(self.actions, key=lambda k: len(self.actions[k]))
        if config.chunk_size > len(self.actions[shortest]):
            raise ValueError(f"robot.chunk_size {config.chunk_size} is longer than the shortest episode "
                             f"({shortest[0]} episode {shortest[1]}: {len(self.actions[shortest])} frames)")
        self.heldout, self.train = self._split()
        train_actions = np.concatenate([self.actions[k] for k in sorted(self.train)])
        self.stats = ActionStats.fit(train_actions, self.gripper_index)

    def _split(self) -> tuple[set[EpisodeKey], set[EpisodeKey]]:
        keys = sorted(self.actions)
        n_held = math.ceil(self.config.heldout_fraction * len(keys))
        if n_held >= len(keys):
            raise ValueError(f"robot.heldout_fraction {self.config.heldout_fraction} holds out {n_held} of "
                             f"{len(keys)} episodes: no training episode is left")
        order = np.random.default_rng(self.config.split_seed).permutation(len(keys))
        heldout = {keys[i] for i in order[:n_held]}
        return heldout, set(keys) - heldout

    def chunk(self, key: EpisodeKey, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normalised actions [H, A], mask [H], raw actions [H, A]) from ``frame`` on: past the episode's end
        the last action is repeated and the mask is False exactly there."""
        actions = self.actions[key]
        steps = np.arange(frame, frame + self.config.chunk_size)
        raw = actions[np.minimum(steps, len(actions) - 1)]
        return self.stats.normalize(raw), steps < len(actions), raw


class RobotFrames:
    """``source(epoch)`` for BatchStream: raw frames (dataset, episode, frame, image bytes, instruction) of one
    split, and (training split only, so each is counted once) a ``Skipped`` item per frame the reader set aside."""

    def __init__(self, episodes: RobotEpisodes, split: Literal["train", "heldout"]) -> None:
        self.episodes, self.split = episodes, split
        self.keys = episodes.train if split == "train" else episodes.heldout

    def __call__(self, epoch: int) -> Iterator[Any]:
        eps = self.episodes
        for name in sorted(eps.metas):
            meta, quarantine, seen = eps.metas[name], Quarantine(stage="finetune"), 0
            for uri in data_files(meta):
                for table in read_robot_steps(meta, uri, source=name, quarantine=quarantine, storage=eps.storage,
                                              batch_size=64, frame_stride=eps.strides[name]):
                    if self.split == "train":
                        yield from (Skipped(r["reason"]) for r in quarantine.rows[seen:])
                    seen = len(quarantine.rows)
                    cols = (table[c].to_pylist() for c in ("episode_index", "frame_index", "image", "task"))
                    for ep, fr, image, task in zip(*cols, strict=True):
                        if (name, ep) in self.keys:
                            yield name, ep, fr, image, task


class RobotSamples:
    """``encode`` for BatchStream: a raw frame as prompt inputs plus its action chunk and pad mask."""

    def __init__(self, episodes: RobotEpisodes, encoder: ChatEncoder) -> None:
        self.episodes, self.encoder = episodes, encoder

    def __call__(self, item: Any) -> dict:
        if isinstance(item, Skipped):
            raise SkipSample(item.reason)
        name, ep, frame, image, task = item
        if not task:
            raise SkipSample("no_instruction")
        sample = self.encoder.prompt(decode_image(image), self.episodes.config.prompt.format(instruction=task))
        actions, valid, raw = self.episodes.chunk((name, ep), frame)
        if not np.isfinite(raw).all():  # a corrupt action inside the chunk: no usable target
            raise SkipSample("non_finite_action")
        sample["actions"] = torch.from_numpy(actions)[None]
        sample["action_mask"] = torch.from_numpy(valid)[None]
        sample["raw_actions"] = torch.from_numpy(raw)[None]  # dataset units, for evaluation
        return sample


def robot_stream(
    episodes: RobotEpisodes,
    encoder: ChatEncoder,
    split: Literal["train", "heldout"],
    *,
    batch_size: int,
    shuffle_buffer: int = 1,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start: Position = (0, 0),
) -> BatchStream:
    """Training batches (endless, shuffled) or held-out batches (one pass, in order)."""
    train = split == "train"
    return BatchStream(source=RobotFrames(episodes, split), encode=RobotSamples(episodes, encoder),
                       collate=encoder.collate, batch_size=batch_size,
                       shuffle_buffer=shuffle_buffer if train else 1, seed=seed, rank=rank,
                       world_size=world_size, epochs=None if train else 1, start=start)
