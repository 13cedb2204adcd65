"""Robot samples: action chunks and their pad mask, normalisation on training episodes only, the episode-level
held-out split, and the inputs that are refused before training."""

from __future__ import annotations

import numpy as np
import pytest

from synth import CorpusInfo
from training.actions import ActionStats
from training.chat import ChatEncoder
from training.config import RobotDataConfig
from training.robot_data import RobotEpisodes, RobotFrames, robot_stream
from training.vlm import load_vlm


@pytest.fixture(scope="module")
def episodes(local_corpus: CorpusInfo) -> RobotEpisodes:
    return RobotEpisodes(RobotDataConfig(sources=local_corpus.robot, heldout_fraction=0.2, split_seed=3))


def test_pad_mask_covers_exactly_the_steps_past_the_episode_end(episodes: RobotEpisodes):
    for key, actions in episodes.actions.items():
        n = len(actions)
        for frame in range(n):
            chunk, mask, raw = episodes.chunk(key, frame)
            assert chunk.shape == (4, 7)
            assert mask.tolist() == [frame + h < n for h in range(4)]
            valid = mask.sum()
            np.testing.assert_array_equal(raw[:valid], actions[frame:frame + valid])
            np.testing.assert_array_equal(raw[valid:], np.repeat(actions[-1:], 4 - valid, axis=0))


def test_normalisation_round_trips_and_uses_training_episodes_only(episodes: RobotEpisodes):
    stats = episodes.stats
    train = np.concatenate([episodes.actions[k] for k in sorted(episodes.train)])
    assert stats == ActionStats.fit(train, gripper_index=6)
    everything = np.concatenate(list(episodes.actions.values()))
    assert stats != ActionStats.fit(everything, gripper_index=6)  # the held-out episodes moved nothing
    lo, hi = np.array(stats.q01), np.array(stats.q99)
    inside = np.clip(train, lo, hi)
    norm = stats.normalize(inside)
    arm = stats.arm
    constant = lo == hi  # the synthetic arm never rolls or pitches
    assert constant[3] and constant[4]
    assert np.all(norm[:, constant] == 0.0)
    varying = [i for i in arm if not constant[i]]
    assert norm[:, varying].min() >= -1.0 and norm[:, varying].max() <= 1.0
    np.testing.assert_allclose(stats.unnormalize(norm)[:, varying], inside[:, varying], atol=1e-5)
    assert set(np.unique(norm[:, 6])) == {0.0, 1.0}
    np.testing.assert_array_equal(stats.unnormalize(norm)[:, 6], inside[:, 6])  # gripper: 0/1 exactly
    assert ActionStats.from_json(stats.to_json()) == stats


def test_heldout_episodes_never_reach_training_batches(episodes: RobotEpisodes, tiny_vlm: str):
    assert len(episodes.heldout) == 2 and len(episodes.train) == 4  # ceil(0.2 * 6) episodes held out
    train_frames = [(name, ep) for name, ep, *_ in RobotFrames(episodes, "train")(0)]
    assert set(train_frames) == episodes.train
    heldout_frames = {(name, ep) for name, ep, *_ in RobotFrames(episodes, "heldout")(0)}
    assert heldout_frames == episodes.heldout
    encoder = ChatEncoder(load_vlm(tiny_vlm)[1], max_length=512)
    batches: list[dict] = []
    stream = iter(robot_stream(episodes, encoder, "train", batch_size=4, shuffle_buffer=4, seed=0))
    while not batches or batches[-1]["_position"] != (0, len(train_frames)):  # one epoch of an endless stream
        batches.append(next(stream))
    rows = np.concatenate([b["raw_actions"].numpy() for b in batches])
    train_rows = {tuple(a) for k in episodes.train for a in episodes.actions[k]}
    assert len(rows) == len(train_frames) == 24
    assert all(tuple(r[0]) in train_rows for r in rows)  # every chunk starts on a training frame


def test_the_split_is_seeded_by_episode(local_corpus: CorpusInfo, episodes: RobotEpisodes):
    same = RobotEpisodes(RobotDataConfig(sources=local_corpus.robot, heldout_fraction=0.2, split_seed=3))
    assert same.heldout == episodes.heldout
    splits = {frozenset(RobotEpisodes(RobotDataConfig(sources=local_corpus.robot, heldout_fraction=0.2,
                                                      split_seed=s)).heldout) for s in range(4)}
    assert len(splits) > 1


@pytest.mark.parametrize(("robot", "head", "field"), [
    ({"chunk_size": 7}, {}, "robot.chunk_size"),
    ({"heldout_fraction": 0.9}, {}, "robot.heldout_fraction"),
    ({}, {"gripper_index": 7}, "head.gripper_index"),
    ({}, {"gripper_index": -8}, "head.gripper_index"),
    ({}, {"action_dim": 6}, "head.action_dim"),
])
def test_bad_robot_inputs_name_the_field(local_corpus: CorpusInfo, robot: dict, head: dict, field: str):
    config = RobotDataConfig(sources=local_corpus.robot, **robot)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        RobotEpisodes(config, **head)
