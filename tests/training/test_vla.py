"""The VLA: saving and reloading from its directory alone (locally and on S3), predicting actions, fine-tuning
(overfitting, held-out evaluation, exact resumption on S3), a non-finite loss, and refused inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import write_robot_dataset
from PIL import Image

from core.location import Location
from core.storage import read_bytes
from infra.s3 import EmbeddedS3
from synth import CorpusInfo
from training.config import FinetuneConfig, RobotDataConfig, TrainConfig
from training.loop import NonFiniteLoss
from training.metrics import MemoryTracker
from training.recipes import build_vla, finetune
from training.vla import load_vla, save_vla


def _config(model: str, robot: list, out: str, *, heldout: float = 0.0, **train) -> FinetuneConfig:
    defaults = {"steps": 2, "lr": 1e-3, "batch_size": 6, "shuffle_buffer": 1, "log_every": 1}
    return FinetuneConfig(model=model, output_uri=out, robot=RobotDataConfig(sources=robot, heldout_fraction=heldout),
                          train=TrainConfig(**(defaults | train)))


@pytest.fixture(scope="module")
def vla(tiny_vlm: str, local_corpus: CorpusInfo, tmp_path_factory):
    return build_vla(_config(tiny_vlm, local_corpus.robot, str(tmp_path_factory.mktemp("unused"))))[0]


def test_a_saved_vla_reloads_from_its_directory_alone(vla, s3: EmbeddedS3, tmp_path):
    image = Image.new("RGB", (48, 48), "orange")
    expected = vla.predict_action(image, "pick up the red cube and place it in the bowl")
    assert expected.shape == (4, 7) and expected.dtype == np.float32
    assert set(expected[:, 6]) <= {vla.stats.q01[6], vla.stats.q99[6]}  # the gripper is open or closed
    local = str(tmp_path / "vla")
    save_vla(vla, local)
    files = {os.path.relpath(os.path.join(d, f), local) for d, _, names in os.walk(local) for f in names}
    assert {"vla.json", "action_stats.json", "head.safetensors", "vlm/model.safetensors"} <= files
    assert not [f for f in files if f.endswith((".pt", ".pkl", ".bin"))]  # never pickle
    remote = f"{s3.make_bucket('vla')}/models/vla"
    save_vla(vla, Location(remote, s3.storage))
    assert json.loads(read_bytes(f"{remote}/vla.json", s3.storage))["chunk_size"] == 4
    for uri, storage in ((local, None), (remote, s3.storage)):
        again = load_vla(Location(uri, storage))
        np.testing.assert_array_equal(again.predict_action(image, "pick up the red cube and place it in the bowl"),
                                      expected)
        assert again.stats == vla.stats and again.spec == vla.spec


def test_fine_tuning_overfits_a_fixed_batch(tiny_vlm: str, tmp_path):
    robot = [write_robot_dataset(str(tmp_path / "arm"), episodes=2, frames=4)]  # 8 frames: one batch
    result = finetune(_config(tiny_vlm, robot, str(tmp_path / "out"), steps=60, lr=3e-3, batch_size=8,
                              min_lr_ratio=1.0, warmup_ratio=0.05))
    assert result.losses[-1] < result.losses[0] / 10


def test_evaluation_and_resumption_on_s3(tiny_vlm: str, local_corpus: CorpusInfo, s3: EmbeddedS3, tmp_path):
    bucket = s3.make_bucket("finetune-ckpt")

    def run(name: str, tracker: MemoryTracker | None = None):
        config = _config(tiny_vlm, local_corpus.robot, f"{bucket}/{name}/vla", heldout=0.2, steps=4,
                         batch_size=3, shuffle_buffer=4, checkpoint_every=2, eval_every=2,
                         checkpoint_uri=f"{bucket}/{name}/ckpt")
        return finetune(config.model_copy(update={"storage": s3.storage}), tracker)

    tracker = MemoryTracker()
    straight = run("straight", tracker)
    evals = [(s, m) for s, m in tracker.metrics if "eval/loss" in m]
    assert [s for s, _ in evals] == [2, 4]
    assert {f"eval/l1/dim{i}" for i in (0, 1, 2, 3, 4, 5)} | {"eval/gripper_accuracy", "eval/l1/arm"} <= set(
        evals[-1][1])
    assert straight.eval == {k.removeprefix("eval/"): v for k, v in evals[-1][1].items()}

    class Crash(MemoryTracker):
        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            if step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("resumed", Crash())
    resumed = run("resumed")
    assert resumed.resumed_from == 2
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6)
    a, b = (load_vla(Location(f"{bucket}/{run}/vla", s3.storage)) for run in ("straight", "resumed"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=name)
    assert resumed.eval == pytest.approx(straight.eval, rel=1e-5)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_vlm: str, tmp_path):
    robot = [write_robot_dataset(str(tmp_path / "arm"), episodes=2, frames=4)]
    ckpt = str(tmp_path / "ckpt")
    # a learning rate that blows the weights up to ~1e30 in one step: the next forward overflows
    config = _config(tiny_vlm, robot, str(tmp_path / "out"), steps=5, lr=1e30, warmup_ratio=0.0, checkpoint_every=1,
                     checkpoint_uri=ckpt)
    with pytest.raises(NonFiniteLoss, match=r"at step 2: run stopped; last good checkpoint: .*step-00000001"):
        finetune(config)
    assert json.loads(read_bytes(f"{ckpt}/latest.json"))["step"] == 1
    assert not os.path.exists(tmp_path / "out")


def test_checkpoints_of_another_model_or_action_size_are_refused(tiny_vlm: str, local_corpus: CorpusInfo,
                                                                tmp_path):
    ckpt = str(tmp_path / "ckpt")
    finetune(_config(tiny_vlm, local_corpus.robot, str(tmp_path / "a"), steps=1, checkpoint_uri=ckpt))
    six = [write_robot_dataset(str(tmp_path / "six"), action_dims=6)]
    with pytest.raises(ValueError, match=r"train\.checkpoint_uri .*action_dim is 7, this run's is 6"):
        finetune(_config(tiny_vlm, six, str(tmp_path / "b"), steps=2, checkpoint_uri=ckpt))
    config = _config(tiny_vlm, local_corpus.robot, str(tmp_path / "c"), steps=2, checkpoint_uri=ckpt)
    wider = config.model_copy(update={"head": config.head.model_copy(update={"hidden_dim": 64})})
    with pytest.raises(ValueError, match=r"train\.checkpoint_uri .*the checkpoint's model is"):
        finetune(wider)
