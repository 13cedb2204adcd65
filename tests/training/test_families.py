"""Every VLM family transformers ships trains in both recipes: a tiny random model of each, built from its own
config and processor class, mid-trained on a real manifest (captions and QA of mixed image sizes) and fine-tuned
into a VLA that reloads from its directory and predicts actions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import write_robot_dataset
from PIL import Image

from estimator.backbones.tiny_vlms import FAMILIES, save_tiny_family
from training.chat import IGNORE, PrefixLMEncoder, make_encoder
from training.config import ChatDataConfig, FinetuneConfig, MidtrainConfig, RobotDataConfig, TrainConfig
from training.objectives import sft_loss
from training.recipes import finetune, midtrain
from training.vla import load_vla
from training.vlm import load_vlm


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory) -> list:
    return [write_robot_dataset(str(tmp_path_factory.mktemp("arm") / "arm"), episodes=3, frames=5)]


def _image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_batch_mixes_image_sizes_and_labels_only_the_answer(family: str, tmp_path):
    model, processor = load_vlm(save_tiny_family(family, str(tmp_path / family)))
    encoder = make_encoder(processor, max_length=2048)
    assert isinstance(encoder, PrefixLMEncoder) == (family == "paligemma")
    sizes = [(40, 30), (96, 20), (33, 81)]  # landscape, very wide, portrait: other crops and patch counts
    samples = [encoder.conversation(_image(w, h, i), "What is on the table?", f"a cube, {i} of them.")
               for i, (w, h) in enumerate(sizes)]
    batch = encoder.collate(samples)
    width = max(len(s["input_ids"]) for s in samples)
    for key, value in batch.items():  # every per-token tensor is padded with the tokens
        if key in ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids"):
            assert value.shape == (3, width), key
    for row, sample in enumerate(samples):
        answer = [t for t in sample["labels"] if t != IGNORE]
        assert encoder.tokenizer.decode(answer).lstrip().startswith(f"a cube, {row} of them.")
        assert sample["labels"][-len(answer):] == sample["input_ids"][-len(answer):]
    loss, count = sft_loss(model, batch)
    assert math.isfinite(loss.item()) and count.item() == sum(
        sum(t != IGNORE for t in s["labels"][1:]) for s in samples)
    loss.backward()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_midtrain_then_finetune(family: str, manifest: str, robot: list, tmp_path):
    base = save_tiny_family(family, str(tmp_path / "base"))
    train = TrainConfig(steps=3, lr=1e-3, batch_size=3, shuffle_buffer=4, log_every=1)
    mid = midtrain(MidtrainConfig(model=base, manifest_uri=manifest, output_uri=str(tmp_path / "vlm"), train=train))
    assert mid.steps == 3 and all(math.isfinite(x) for x in mid.losses)
    result = finetune(FinetuneConfig(model=str(tmp_path / "vlm"), output_uri=str(tmp_path / "vla"),
                                     robot=RobotDataConfig(sources=robot, heldout_fraction=0.3), train=train))
    assert result.steps == 3 and all(math.isfinite(x) for x in result.losses)
    assert {"loss", "l1/arm", "gripper_accuracy"} <= set(result.eval)
    actions = load_vla(str(tmp_path / "vla")).predict_action(_image(50, 40, 0), "pick up the cube")
    assert actions.shape == (4, 7) and np.isfinite(actions).all()


def test_a_model_without_chat_template_trains_with_the_configs(manifest: str, tmp_path):
    model, processor = load_vlm(save_tiny_family("llava", str(tmp_path / "shipped")))
    template = processor.chat_template
    processor.chat_template = processor.tokenizer.chat_template = None  # both would be saved
    base = str(tmp_path / "base")
    model.save_pretrained(base)
    processor.save_pretrained(base)
    config = MidtrainConfig(model=base, manifest_uri=manifest, output_uri=str(tmp_path / "vlm"),
                            train=TrainConfig(steps=1, batch_size=2, shuffle_buffer=1))
    with pytest.raises(ValueError, match="chat_template"):
        midtrain(config)
    midtrain(config.model_copy(update={"data": ChatDataConfig(chat_template=template)}))
    assert load_vlm(str(tmp_path / "vlm"))[1].chat_template == template  # saved with the model


def test_the_loss_computes_logits_only_where_answers_are(tmp_path):
    """With a 150k vocabulary, logits at the answer positions only: a few MB instead of [B, T, V] floats."""
    model, processor = load_vlm(save_tiny_family("llava", str(tmp_path / "m")))
    encoder = make_encoder(processor, max_length=512)
    batch = encoder.collate([encoder.conversation(_image(40, 30, 0), "Describe the image.", "red.")] * 2)
    seen = {}
    model.register_forward_hook(lambda m, args, out: seen.update(shape=tuple(out.logits.shape)))
    loss, count = sft_loss(model, batch)
    answer = count.item() // 2
    assert seen["shape"] == (2, answer, model.config.text_config.vocab_size)
    assert batch["input_ids"].shape[1] > 4 * answer  # most of the sequence (image, prompt) got no logits
    full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
    expected = torch.nn.functional.cross_entropy(full.flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                 ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(loss, expected)

