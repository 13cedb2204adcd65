"""Ray Train: two CPU workers (DDP over gloo) on the shared local Ray give the loss of one process on the same
global batch."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from training.config import MidtrainConfig, TrainConfig
from training.distributed import run_distributed
from training.recipes import midtrain

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("ray_local")
def test_two_workers_match_one_process_on_the_same_global_batch(tiny_vlm: str, manifest: str, tmp_path):
    def config(out: str, batch_size: int) -> MidtrainConfig:
        # 8 selected samples, shuffled, a global batch of 4: every step sees another half, and rank r takes the
        # r-th pair of the very batch one process takes
        train = TrainConfig(steps=4, lr=1e-3, batch_size=batch_size, shuffle_buffer=8, seed=3, log_every=1)
        return MidtrainConfig(model=tiny_vlm, manifest_uri=manifest, output_uri=str(tmp_path / out), train=train)

    single = midtrain(config("one", batch_size=4))
    double = run_distributed("midtrain", config("two", batch_size=2), num_workers=2, cpus_per_worker=0.5)
    assert double.steps == 4 and len(set(single.losses)) == 4
    assert double.losses == pytest.approx(single.losses, rel=1e-5)
    a, b = load_file(str(tmp_path / "one/model.safetensors")), load_file(str(tmp_path / "two/model.safetensors"))
    for name in a:  # Adam's m / sqrt(v) turns reduction-order noise on near-zero gradients into ~1e-6 moves
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_a_recipe_gets_its_own_config(tiny_vlm: str, manifest: str, tmp_path):
    config = MidtrainConfig(model=tiny_vlm, manifest_uri=manifest, output_uri=str(tmp_path))
    with pytest.raises(ValueError, match="recipe 'finetune' takes a FinetuneConfig"):
        run_distributed("finetune", config, num_workers=1)
