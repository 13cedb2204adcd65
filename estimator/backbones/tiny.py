"""Tiny random-initialised models of every backbone kind, saved exactly as real ones are stored, so the demo and
the tests exercise the real loading code with no download (there is no hub access here).

Everything is built offline: open_clip ships its BPE vocabulary; the transformers models get a byte-level
tokenizer made from scratch. The same seed gives the same weights, hence the same fingerprint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable

import torch

from core.settings import StorageConfig
from core.storage import filesystem, join, protocol_of
from estimator.backbones.spec import BackboneSpec

IMAGE_SIZE, PATCH, WIDTH, LAYERS, HEADS = 32, 8, 32, 2, 2
_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]  # ids 0..4
_PAD, _BOS, _EOS, _IMAGE = 0, 2, 3, 4
_MAX_TEXT, _MAX_PROMPT = 64, 512  # CLIP text positions; Llava prompt (16 image tokens + text)
_MEAN, _STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _tokenizer(max_length: int) -> object:
    """A byte-level tokenizer with no merges (every byte is a token): needs no training data and no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_SPECIALS)
    # CLIP pools on the EOS token: every text must end with it.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", _BOS),
                                                                                              ("</s>", _EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length,
                                   extra_special_tokens={"image_token": "<image>"})


def _image_processor(image_size: int = IMAGE_SIZE) -> object:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size,
                              "width": image_size}, image_mean=_MEAN, image_std=_STD)


def _save_open_clip(out: str) -> str:
    """open_clip's own directory layout: open_clip_config.json + open_clip_model.safetensors."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    cfg = {"embed_dim": WIDTH,
           "vision_cfg": {"image_size": IMAGE_SIZE, "layers": LAYERS, "width": WIDTH, "head_width": WIDTH // HEADS,
                          "patch_size": PATCH},
           # open_clip's SimpleTokenizer has 49408 tokens and CLIP pools on the highest id (end of text).
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": WIDTH, "heads": HEADS,
                        "layers": LAYERS}}
    model = CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(out, "open_clip_model.safetensors"))
    preprocess = {"mean": _MEAN, "std": _STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": preprocess}, f, indent=2)
    return "open_clip_config.json"


def _save_hf_clip(out: str) -> str:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tower = {"hidden_size": WIDTH, "intermediate_size": 2 * WIDTH, "num_hidden_layers": LAYERS,
             "num_attention_heads": HEADS}
    cfg = CLIPConfig(
        text_config={**tower, "vocab_size": len(_SPECIALS) + 256, "max_position_embeddings": _MAX_TEXT,
                     "pad_token_id": _PAD, "bos_token_id": _BOS, "eos_token_id": _EOS},
        vision_config={**tower, "image_size": IMAGE_SIZE, "patch_size": PATCH}, projection_dim=WIDTH)
    CLIPModel(cfg).save_pretrained(out)
    CLIPProcessor(image_processor=_image_processor(), tokenizer=_tokenizer(_MAX_TEXT)).save_pretrained(out)
    return "config.json"


def _save_hf_vlm(out: str, width: int = WIDTH, layers: int = LAYERS, image_size: int = IMAGE_SIZE) -> str:
    """A tiny Llava: CLIP vision tower + projector + Llama language model, with a chat template; ``width``,
    ``layers`` and ``image_size`` (a multiple of the 8-px patch) scale both towers."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    vision = CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                              num_attention_heads=HEADS, image_size=image_size, patch_size=PATCH)
    text = LlamaConfig(vocab_size=len(_SPECIALS) + 256, hidden_size=width, intermediate_size=2 * width,
                       num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                       max_position_embeddings=_MAX_PROMPT, pad_token_id=_PAD, bos_token_id=_BOS, eos_token_id=_EOS)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=_IMAGE,
                      vision_feature_select_strategy="default", vision_feature_layer=-1)
    LlavaForConditionalGeneration(cfg).save_pretrained(out)
    # Turns end with a newline; an assistant turn also with EOS (so a fine-tuned model learns to stop), and
    # add_generation_prompt opens the assistant turn (training masks everything before the answer).
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}assistant: {% endif %}")
    LlavaProcessor(image_processor=_image_processor(image_size), tokenizer=_tokenizer(_MAX_PROMPT), patch_size=PATCH,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=template).save_pretrained(out)
    return "config.json"


_BUILDERS: dict[str, Callable[[str], str]] = {"open_clip": _save_open_clip, "hf_clip": _save_hf_clip,
                                              "hf_vlm": _save_hf_vlm}


def save_tiny_backbone(kind: str, dest_uri: str, storage: StorageConfig | None = None, *,
                       seed: int = 0, **size: int) -> BackboneSpec:
    """Build a tiny model of ``kind`` from ``seed``, save it under ``dest_uri`` (local or s3://) and return the
    spec that loads it. On S3 the config file is uploaded last, so a half-uploaded model never validates.
    ``size`` (hf_vlm only: ``width``, ``layers``, ``image_size``) builds a larger one."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown backbone kind {kind!r}; expected one of {sorted(_BUILDERS)}")
    if size and kind != "hf_vlm":
        raise ValueError(f"only the tiny hf_vlm takes a size, not {kind}")
    with tempfile.TemporaryDirectory() as tmp:
        local = tmp if protocol_of(dest_uri) != "file" else filesystem(dest_uri)[1]
        os.makedirs(local, exist_ok=True)
        with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the caller's RNG
            torch.manual_seed(seed)
            config_file = _BUILDERS[kind](local, **size)
        if local == tmp:
            fs, _ = filesystem(dest_uri, storage)
            names = sorted(os.listdir(tmp), key=lambda n: n == config_file)
            for name in names:
                fs.put_file(os.path.join(tmp, name), filesystem(join(dest_uri, name), storage)[1])
    return BackboneSpec(kind=kind, model=dest_uri)  # type: ignore[arg-type]
