"""Closed-loop evaluation: the Wilson interval (known values, level held by simulation), and a tiny VLA
fine-tuned on toy-world episodes rolled out in the toy world, its evaluation stored beside the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.settings import SourceSpec
from synth.lerobot import CAMERA
from synth.toyworld import TabletopEnv, write_toyworld_dataset
from training.closed_loop import closed_loop_eval, load_closed_loop, wilson_interval
from training.config import ClosedLoopConfig, FinetuneConfig, RobotDataConfig, TrainConfig
from training.metrics import MemoryTracker
from training.recipes import finetune


def test_wilson_interval_matches_known_values_and_stays_in_the_unit_interval():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and 0.0 < wilson_interval(0, 20)[1] < 0.2
    assert wilson_interval(20, 20)[1] == 1.0
    assert all(np.isnan(wilson_interval(0, 0)))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)


def test_wilson_interval_holds_its_level():
    rng = np.random.default_rng(0)
    n, p, trials = 30, 0.2, 4000
    hits = rng.binomial(n, p, trials)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson_interval(int(k), n) for k in hits)])
    assert 0.92 <= covered <= 0.98


@pytest.fixture(scope="module")
def toy_vla(tiny_vlm: str, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("toy")
    data = str(root / "toyworld")
    write_toyworld_dataset(data, range(3), size=32, episodes_per_file=3)
    robot = RobotDataConfig(sources=[SourceSpec(name="toyworld", format="lerobot", uri=data, image_key=CAMERA)],
                            heldout_fraction=0.0)
    out = str(root / "vla")
    finetune(FinetuneConfig(model=tiny_vlm, output_uri=out, robot=robot,
                            train=TrainConfig(steps=2, batch_size=4, shuffle_buffer=1, log_every=1)))
    return out


def test_a_tiny_vla_is_rolled_out_and_its_evaluation_stored_beside_it(toy_vla: str):
    config = ClosedLoopConfig(episodes=3, image_size=32, max_steps=5, gif_episodes=2)
    tracker = MemoryTracker()
    result = closed_loop_eval(toy_vla, TabletopEnv, config, tracker=tracker, step=2)
    assert result.episodes == 3 and len(result.success) == 3 and result.seeds == [100_000, 100_001, 100_002]
    assert 0.0 <= result.low <= result.rate <= result.high <= 1.0
    assert result.rate == sum(result.success) / 3
    assert all(1 <= s <= 5 for s in result.steps)
    assert tracker.series("closed_loop/success_rate") == [(2, result.rate)]
    assert load_closed_loop(toy_vla) == result
    with open(f"{toy_vla}/closed_loop/rollouts.gif", "rb") as f:
        gif = Image.open(io.BytesIO(f.read()))
    assert gif.format == "GIF" and gif.n_frames == max(result.steps[:2]) + 1  # the first frame, then one a step
    assert gif.size[0] > gif.size[1]  # two panels side by side


def test_a_world_with_other_actions_is_refused(toy_vla: str):
    class SixDof(TabletopEnv):
        action_dim = 6

    with pytest.raises(ValueError, match="6-dim actions"):
        closed_loop_eval(toy_vla, SixDof, ClosedLoopConfig(episodes=1, image_size=32))
