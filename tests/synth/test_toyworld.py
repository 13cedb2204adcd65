"""The toy world: the expert solves every task, a random policy almost never does, the relations mean what the
pool's QA says, a seed fixes the scene, and the expert's episodes read back through the product's robot reader."""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import SourceSpec
from synth.lerobot import CAMERA
from synth.tabletop import Obj
from synth.toyworld import (
    RELATIONS,
    TabletopEnv,
    expert_action,
    expert_episode,
    random_action,
    relation_target,
    write_toyworld_dataset,
)
from training.config import RobotDataConfig
from training.robot_data import RobotEpisodes, RobotFrames


def _roll(env: TabletopEnv, seed: int, policy) -> bool:
    env.reset(seed)
    while not env.done:
        env.step(policy(env))
    return env.success


def test_the_expert_solves_every_task_and_a_random_policy_almost_none():
    env = TabletopEnv(size=32)
    assert all(_roll(env, s, expert_action) for s in range(40))
    rng = np.random.default_rng(0)
    random_wins = sum(_roll(env, s, lambda e: random_action(e, rng)) for s in range(60))
    assert random_wins <= 3  # 0 of 200 when measured: success needs the right object, not luck


def test_every_relation_occurs_and_names_an_object_of_the_scene():
    env = TabletopEnv(size=32)
    seen = set()
    for s in range(60):
        text = env.reset(s).instruction
        assert text.startswith("pick up the ")
        seen |= {r for r, w in (("left", "left of"), ("right", "right of"), ("behind", "behind"),
                                ("front", "in front of")) if f" {w} the " in text}
        if "object" not in text:
            seen.add("name")
        assert env.objects[env.target].name in text or "object" in text
    assert seen == set(RELATIONS)


def test_relations_follow_the_pool_qa_definitions():
    a, near, far, back = (Obj("cube", c, u, v) for c, u, v in
                          (("red", 0.7, 0.5), ("blue", 0.5, 0.5), ("green", 0.2, 0.5), ("yellow", 0.72, 0.8)))
    objects = [a, near, far, back]
    assert relation_target(objects, a, "left") is near  # the nearest on that side, as "What is left of X?"
    assert relation_target(objects, a, "right") is None
    assert relation_target(objects, a, "behind") is back  # farther from the camera
    assert relation_target(objects, back, "front") is a
    with pytest.raises(ValueError, match="unknown relation"):
        relation_target(objects, a, "above")


def test_a_seed_fixes_the_scene_and_the_env_refuses_bad_use():
    one, two = TabletopEnv(size=32), TabletopEnv(size=32)
    first, again = one.reset(5), two.reset(5)
    np.testing.assert_array_equal(first.image, again.image)
    assert first.instruction == again.instruction and first.image.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="7 finite numbers"):
        one.step(np.zeros(3))
    while not one.done:
        one.step(expert_action(one))
    with pytest.raises(RuntimeError, match="after the episode ended"):
        one.step(expert_action(one))


def test_expert_episodes_read_back_through_the_robot_reader(tmp_path):
    uri = str(tmp_path / "toyworld")
    info = write_toyworld_dataset(uri, range(4), size=32, episodes_per_file=2)
    assert info["total_episodes"] == 4 and info["robot_type"] == "toyworld_arm"
    spec = SourceSpec(name="toyworld", format="lerobot", uri=uri, image_key=CAMERA)
    episodes = RobotEpisodes(RobotDataConfig(sources=[spec], heldout_fraction=0.25))
    for seed in range(4):
        np.testing.assert_array_equal(episodes.actions[("toyworld", seed)], expert_episode(seed, size=32).action)
    frames = list(RobotFrames(episodes, "train")(0))
    assert {task for *_, task in frames} <= {expert_episode(s, size=32).task for s in range(4)}
    assert len(frames) == sum(len(episodes.actions[k]) for k in episodes.train)


def test_emt_synth_toyworld_writes_the_expert_data_and_a_spatial_qa_source(tmp_path):
    from core.read import Quarantine, read_source
    from flows.cli import build_parser, model_from_args
    from synth import SynthConfig, generate_corpus

    args = build_parser().parse_args(["synth", str(tmp_path), "--toyworld", "true", "--samples-per-source", "6",
                                      "--image-size", "32", "--robot-episodes", "2"])
    config = model_from_args(SynthConfig, args, origin="test")
    assert config.toyworld and "toyworld" in config.fingerprint()
    assert "toyworld" not in SynthConfig().fingerprint()  # older corpora keep their fingerprint
    info = generate_corpus(str(tmp_path / "corpus"), config)
    assert [s.name for s in info.robot] == ["toyworld"]
    assert [s.name for s in info.pool] == ["photos", "tabletop", "docs", "charts", "spatial"]
    spatial = next(s for s in info.pool if s.name == "spatial")
    texts = [t for table in read_source(spatial, quarantine=Quarantine()) for t in table["text"].to_pylist()]
    assert len(texts) == 6 and sum(t.startswith("Q: Which object is ") for t in texts) >= 4
    episodes = RobotEpisodes(RobotDataConfig(sources=info.robot, heldout_fraction=0.0))
    np.testing.assert_array_equal(episodes.actions[("toyworld", 1)], expert_episode(1, size=32).action)
