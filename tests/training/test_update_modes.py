"""Update modes: frozen parts stay bit-identical through training on every family, LoRA trains adapters only and
is merged on save (the saved model loads in plain transformers), gradient checkpointing computes the same
gradients, and the earlier ``freeze_vision`` setting still works."""

from __future__ import annotations

import pytest
import torch
from conftest import write_robot_dataset
from safetensors.torch import load_file

from estimator.backbones.tiny_vlms import FAMILIES, save_tiny_family
from training.config import FinetuneConfig, LoraSpec, MidtrainConfig, RobotDataConfig, TrainConfig, UpdateFreeze
from training.metrics import MemoryTracker
from training.recipes import finetune, midtrain
from training.update_modes import PROJECTORS, decoder_layers, freeze, prepare, vision_tower
from training.vlm import load_vlm


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(f"{path}/model.safetensors")


def _train(**train) -> TrainConfig:
    return TrainConfig(**({"steps": 2, "lr": 1e-2, "batch_size": 3, "shuffle_buffer": 1, "warmup_ratio": 0} | train))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_frozen_parts_are_found_in_every_family(family: str, tmp_path):
    model, _ = load_vlm(save_tiny_family(family, str(tmp_path / family)))

    def ids(*modules: torch.nn.Module) -> set[int]:
        return {id(p) for m in modules for p in m.parameters()}

    tower = ids(vision_tower(model))
    projector = ids(*(model.get_submodule(n) for n, _ in model.named_modules() if n in PROJECTORS))
    lower = ids(decoder_layers(model)[0], model.get_input_embeddings())
    assert tower and projector and lower
    freeze(model, UpdateFreeze(vision=True, llm_layers="half"))  # the lower half of two layers
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen == (tower - projector) | lower  # Qwen's merger sits in the tower: still trained
    freeze(model, UpdateFreeze(projector=True))
    assert not {id(p) for p in model.parameters() if p.requires_grad} & projector


def test_midtraining_leaves_frozen_weights_untouched(manifest: str, tmp_path):
    base = save_tiny_family("qwen2_vl", str(tmp_path / "base"))
    config = MidtrainConfig(model=base, manifest_uri=manifest, output_uri=str(tmp_path / "out"),
                            train=_train(freeze=UpdateFreeze(vision=True, llm_layers=1)))
    tracker = MemoryTracker()
    midtrain(config, tracker)
    before, after = _weights(base), _weights(str(tmp_path / "out"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not {k for k in changed if "visual.blocks." in k or ".layers.0." in k or "embed_tokens" in k}
    assert any("visual.merger." in k for k in changed) and any(".layers.1." in k for k in changed)
    assert 0 < tracker.params["trainable_share"] < 1


def test_lora_trains_adapters_and_saves_a_plain_merged_model(manifest: str, robot_uri: list, tmp_path):
    base = save_tiny_family("llava", str(tmp_path / "base"))
    lora = _train(lora=LoraSpec(rank=4, alpha=8))
    tracker = MemoryTracker()
    midtrain(MidtrainConfig(model=base, manifest_uri=manifest, output_uri=str(tmp_path / "vlm"), train=lora), tracker)
    assert tracker.params["trainable_share"] < 0.2 and tracker.params["train.lora.rank"] == 4
    before, after = _weights(base), _weights(str(tmp_path / "vlm"))
    assert after.keys() == before.keys()  # no adapter left: plain transformers loads it
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("language_model" in k and "proj" in k for k in changed)
    load_vlm(str(tmp_path / "vlm"))
    finetune(FinetuneConfig(model=str(tmp_path / "vlm"), output_uri=str(tmp_path / "vla"),
                            robot=RobotDataConfig(sources=robot_uri, heldout_fraction=0), train=lora))
    assert _weights(str(tmp_path / "vla/vlm")).keys() == before.keys()


def test_gradient_checkpointing_computes_the_same_gradients(tmp_path):
    from test_families import _image

    from training.chat import make_encoder
    from training.objectives import sft_loss

    path = save_tiny_family("gemma3", str(tmp_path / "m"))
    grads = []
    for checkpointing in (False, True):
        model, processor = load_vlm(path)
        model = prepare(model, _train(gradient_checkpointing=checkpointing)).train()
        encoder = make_encoder(processor, max_length=512)
        batch = encoder.collate([encoder.conversation(_image(40, 30, i), "What is it?", "a cube.") for i in (0, 1)])
        loss, _ = sft_loss(model, batch)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_earlier_freeze_vision_setting_still_works():
    with pytest.warns(DeprecationWarning, match="freeze.vision"):
        config = TrainConfig.model_validate({"freeze_vision": True, "freeze": {"llm_layers": 1}})
    assert config.freeze == UpdateFreeze(vision=True, llm_layers=1)
    with pytest.raises(ValueError, match="llm_layers"):
        TrainConfig.model_validate({"freeze": {"llm_layers": -1}})


@pytest.fixture(scope="module")
def robot_uri(tmp_path_factory: pytest.TempPathFactory) -> list:
    return [write_robot_dataset(str(tmp_path_factory.mktemp("arm") / "arm"), episodes=2, frames=5)]
