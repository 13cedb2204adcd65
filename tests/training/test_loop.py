"""The train loop through the mid-training recipe: LR schedule, loss normalisation over accumulation, overfitting,
exact resumption from checkpoints on S3, and the inputs refused before training."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_manifest
from safetensors.torch import load_file

from infra.s3 import EmbeddedS3
from synth import CorpusInfo
from training.chat import ChatEncoder
from training.config import ChatDataConfig, MidtrainConfig, TrainConfig
from training.loop import lr_at
from training.metrics import MemoryTracker
from training.midtrain_data import midtrain_stream
from training.objectives import sft_loss
from training.recipes import midtrain
from training.vlm import load_vlm


def _config(tiny_vlm: str, manifest: str, out: str, **train) -> MidtrainConfig:
    defaults = {"steps": 1, "lr": 1e-3, "batch_size": 4, "shuffle_buffer": 1, "log_every": 1}
    return MidtrainConfig(model=tiny_vlm, manifest_uri=manifest, output_uri=out,
                          train=TrainConfig(**(defaults | train)))


def test_lr_warms_up_linearly_then_follows_a_cosine():
    config = TrainConfig(steps=20, lr=1.0, warmup_ratio=0.2, min_lr_ratio=0.1)
    assert [lr_at(s, config) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, config) == 1.0
    assert lr_at(12, config) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(20, config) == pytest.approx(0.1)
    lrs = [lr_at(s, config) for s in range(3, 20)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_accumulated_loss_equals_the_single_large_batch_loss(tiny_vlm: str, manifest: str, tmp_path):
    whole = midtrain(_config(tiny_vlm, manifest, str(tmp_path / "a"), batch_size=4, grad_accum=1))
    split = midtrain(_config(tiny_vlm, manifest, str(tmp_path / "b"), batch_size=2, grad_accum=2))
    assert split.losses[0] == pytest.approx(whole.losses[0], rel=1e-6)
    a, b = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    # the samples differ in length, so a mean of per-micro-batch means would not match
    model, processor = load_vlm(tiny_vlm)
    stream = iter(midtrain_stream(manifest, ChatEncoder(processor, max_length=512), ChatDataConfig(),
                                  batch_size=2, shuffle_buffer=1, seed=0))
    with torch.no_grad():
        parts = [sft_loss(model, next(stream)) for _ in range(2)]
    mean_of_means = sum(float(s / n) for s, n in parts) / 2
    assert float(sum(s for s, _ in parts) / sum(n for _, n in parts)) == pytest.approx(whole.losses[0], rel=1e-5)
    assert abs(mean_of_means - whole.losses[0]) > 1e-4


def test_mid_training_overfits_a_fixed_batch(tiny_vlm: str, local_corpus: CorpusInfo, tmp_path):
    manifest = make_manifest(str(tmp_path / "m/manifest.parquet"), local_corpus, per_source=1)  # 4 samples
    tracker = MemoryTracker()
    result = midtrain(_config(tiny_vlm, manifest, str(tmp_path / "out"), steps=60, lr=1e-2, min_lr_ratio=1.0,
                              warmup_ratio=0.05, log_every=20), tracker)
    assert result.losses[-1] < result.losses[0] / 10
    assert [s for s, _ in tracker.series("loss")] == [20, 40, 60]
    assert tracker.params["train.lr"] == 1e-2 and tracker.params["manifest_uri"] == manifest
    last = tracker.metrics[-1][1]
    assert last["samples_per_s"] > 0 and last["tokens_per_s"] > last["samples_per_s"] and "mfu" not in last


class _Interrupt(MemoryTracker):
    """Stops the run (as a crash would) when step ``at`` is logged."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step == self.at:
            raise KeyboardInterrupt
        super().log_metrics(metrics, step)


def test_resuming_on_s3_gives_the_uninterrupted_run(tiny_vlm: str, manifest: str, s3: EmbeddedS3, tmp_path):
    bucket = s3.make_bucket("midtrain-ckpt")
    train = {"steps": 6, "batch_size": 2, "shuffle_buffer": 4, "checkpoint_every": 3}  # workers: test_stream

    def run(name: str, tracker: MemoryTracker | None = None):
        config = _config(tiny_vlm, manifest, str(tmp_path / name), checkpoint_uri=f"{bucket}/{name}", **train)
        return midtrain(config.model_copy(update={"storage": s3.storage}), tracker)

    straight = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("resumed", _Interrupt(at=5))
    resumed = run("resumed")
    assert resumed.resumed_from == 3
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6)
    a = load_file(str(tmp_path / "straight/model.safetensors"))
    b = load_file(str(tmp_path / "resumed/model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    assert resumed.checkpoint == f"{bucket}/resumed/step-00000006"


def test_bad_manifests_and_models_name_the_field(tiny_vlm: str, local_corpus: CorpusInfo, manifest: str,
                                                tmp_path):
    empty = make_manifest(str(tmp_path / "empty/manifest.parquet"), local_corpus, per_source=0)
    with pytest.raises(ValueError, match="manifest_uri .*selects no rows"):
        midtrain(_config(tiny_vlm, empty, str(tmp_path / "o")))
    with pytest.raises(ValueError, match="manifest_uri .*no such manifest"):
        midtrain(_config(tiny_vlm, str(tmp_path / "missing/manifest.parquet"), str(tmp_path / "o")))
    with pytest.raises(ValueError, match="model .*no model there"):
        midtrain(_config(str(tmp_path / "no-model"), manifest, str(tmp_path / "o")))
