"""Tiny random-initialised models of the VLM families transformers ships, each with its own processor class and a
chat template in its family's format, saved as a real checkpoint is (``save_pretrained``). They let the tests and
a new user try training and embedding on every family offline: nothing is downloaded.

Every family gets a byte-level tokenizer (every byte a token, plus the family's special tokens) and an image size
that its processor resizes to; a model is a few hundred thousand parameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

WIDTH, LAYERS, HEADS = 32, 2, 2
_MEAN, _STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
_BASE = ["<pad>", "<unk>", "<s>", "</s>"]  # ids 0..3 in every family

# The families' chat formats, written the way their released templates render a user turn with an image and
# an assistant answer (special tokens as the family spells them).
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] | trim }}"
    "{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_IDEFICS_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}{% if m['content'][0]['type'] == 'image' %}"
    "{{ ':' }}{% else %}{{ ': ' }}{% endif %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% else %}<image>{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
_INTERNVL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<IMG_CONTEXT>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% if m['role'] == 'assistant' %}{{ eos_token }}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}")


def tokenizer(specials: list[str], named: dict[str, str] | None = None, *, max_length: int = 2048) -> Any:
    """A byte-level tokenizer with no merges plus ``specials``; ``named`` declares family attributes
    (``image_token``, ``boi_token``, ...) the processors read from their tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    every = _BASE + [t for t in specials if t not in _BASE]
    vocab = {tok: i for i, tok in enumerate(every + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(every)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length, extra_special_tokens=named or {})


def _text(kind: str, vocab: int, **extra: Any) -> dict:
    """A two-layer language model config of ``kind`` (llama, qwen2, gemma, ...) as a dict."""
    return {"model_type": kind, "vocab_size": vocab, "hidden_size": WIDTH, "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": HEADS,
            "head_dim": WIDTH // HEADS, "max_position_embeddings": 2048, "pad_token_id": 0, "bos_token_id": 2,
            "eos_token_id": 3, **extra}


def _siglip(image_size: int, patch: int) -> dict:
    return {"model_type": "siglip_vision_model", "hidden_size": WIDTH, "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "image_size": image_size, "patch_size": patch}


def _save(model: Any, processor: Any, out: str) -> None:
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _qwen(version: str, out: str) -> None:
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL: dynamic resolution (patches merged 2x2), M-RoPE positions."""
    import transformers as tf

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
    tok = tokenizer(specials, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    patch, merge = 8, 2
    vision = {"depth": LAYERS, "num_heads": HEADS, "patch_size": patch, "spatial_merge_size": merge,
              "temporal_patch_size": 2, "in_channels": 3}
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}
    if version == "2":
        config = tf.Qwen2VLConfig(text_config=_text("qwen2_vl_text", len(tok), rope_scaling={
                                      "type": "mrope", "mrope_section": [2, 3, 3]}),
                                  vision_config={**vision, "embed_dim": WIDTH, "hidden_size": WIDTH, "mlp_ratio": 2},
                                  **tokens)
        model, proc = tf.Qwen2VLForConditionalGeneration(config), tf.Qwen2VLProcessor
    elif version == "2.5":
        config = tf.Qwen2_5_VLConfig(text_config=_text("qwen2_5_vl_text", len(tok), rope_scaling={
                                         "type": "mrope", "mrope_section": [2, 3, 3]}),
                                     vision_config={**vision, "hidden_size": WIDTH, "intermediate_size": 2 * WIDTH,
                                                    "out_hidden_size": WIDTH, "window_size": 32,
                                                    "fullatt_block_indexes": [1]}, **tokens)
        model, proc = tf.Qwen2_5_VLForConditionalGeneration(config), tf.Qwen2_5_VLProcessor
    else:
        config = tf.Qwen3VLConfig(text_config=_text("qwen3_vl_text", len(tok), rope_scaling={
                                      "rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
                                  vision_config={**vision, "hidden_size": WIDTH, "intermediate_size": 2 * WIDTH,
                                                 "out_hidden_size": WIDTH, "num_position_embeddings": 64,
                                                 "deepstack_visual_indexes": [0]}, **tokens)
        model, proc = tf.Qwen3VLForConditionalGeneration(config), tf.Qwen3VLProcessor
    # Images are resized to multiples of patch x merge between these pixel counts (4 to 16 merged tokens).
    size = {"shortest_edge": (patch * merge) ** 2 * 4, "longest_edge": (patch * merge) ** 2 * 16}
    images = tf.Qwen2VLImageProcessor(size=size, patch_size=patch, merge_size=merge, image_mean=_MEAN,
                                      image_std=_STD)
    videos = tf.Qwen2VLVideoProcessor(size=size, patch_size=patch, merge_size=merge)
    _save(model, proc(image_processor=images, tokenizer=tok, video_processor=videos,
                      chat_template=_QWEN_TEMPLATE), out)


def _idefics(family: str, out: str) -> None:
    """Idefics3 and SmolVLM: a SigLIP tower, pixel shuffle, images split into crops plus a global view."""
    import transformers as tf

    specials = (["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<|im_start|>"]
                + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
    tok = tokenizer(specials, {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                               "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"})
    side, patch, scale = 32, 8, 2
    vision = {**_siglip(side, patch), "model_type": "idefics3_vision" if family == "idefics3" else "smolvlm_vision"}
    seq = (side // patch) ** 2 // scale ** 2
    kwargs = {"text_config": _text("llama", len(tok)), "vision_config": vision, "scale_factor": scale,
              "image_token_id": tok.convert_tokens_to_ids("<image>")}
    sizes = {"size": {"longest_edge": 2 * side}, "max_image_size": {"longest_edge": side}, "image_mean": _MEAN,
             "image_std": _STD}
    if family == "idefics3":
        model = tf.Idefics3ForConditionalGeneration(tf.Idefics3Config(**kwargs))
        processor = tf.Idefics3Processor(image_processor=tf.Idefics3ImageProcessor(**sizes), tokenizer=tok,
                                         image_seq_len=seq, chat_template=_IDEFICS_TEMPLATE)
    else:
        model = tf.SmolVLMForConditionalGeneration(tf.SmolVLMConfig(**kwargs))
        processor = tf.SmolVLMProcessor(image_processor=tf.SmolVLMImageProcessor(**sizes), tokenizer=tok,
                                        video_processor=tf.SmolVLMVideoProcessor(**sizes), image_seq_len=seq,
                                        chat_template=_IDEFICS_TEMPLATE)
    _save(model, processor, out)


def _gemma3(out: str) -> None:
    """Gemma3: SigLIP tower, pooled to a fixed number of soft tokens between <start_of_image>/<end_of_image>."""
    import transformers as tf

    specials = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = tokenizer(specials, {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                               "image_token": "<image_soft_token>"})
    side, patch, soft = 32, 8, 4
    config = tf.Gemma3Config(text_config=_text("gemma3_text", len(tok), sliding_window=64,
                                               query_pre_attn_scalar=WIDTH // HEADS),
                             vision_config=_siglip(side, patch), mm_tokens_per_image=soft,
                             boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                             eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                             image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    images = tf.Gemma3ImageProcessor(size={"height": side, "width": side}, image_mean=_MEAN, image_std=_STD)
    _save(tf.Gemma3ForConditionalGeneration(config),
          tf.Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=soft,
                             chat_template=_GEMMA_TEMPLATE), out)


def _paligemma(out: str) -> None:
    """PaliGemma: a prefix-LM (image + prefix attended both ways, the suffix causally); no chat template."""
    import transformers as tf

    tok = tokenizer(["<image>"], {"image_token": "<image>"})
    side, patch = 32, 8
    images = tf.SiglipImageProcessor(size={"height": side, "width": side}, image_mean=_MEAN, image_std=_STD)
    images.image_seq_length = (side // patch) ** 2
    processor = tf.PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds its <loc>/<seg> tokens
    config = tf.PaliGemmaConfig(text_config=_text("gemma", len(processor.tokenizer)),
                                vision_config=_siglip(side, patch), projection_dim=WIDTH,
                                image_token_index=processor.image_token_id)
    _save(tf.PaliGemmaForConditionalGeneration(config), processor, out)


def _internvl(out: str) -> None:
    """InternVL (3.x in transformers' own format): pixel-shuffled ViT features in <img>...</img>."""
    import transformers as tf

    specials = ["<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = tokenizer(specials, {"start_image_token": "<img>", "end_image_token": "</img>",
                               "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    side, patch = 32, 8
    vision = {"hidden_size": WIDTH, "intermediate_size": 2 * WIDTH, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "image_size": [side, side], "patch_size": [patch, patch]}
    config = tf.InternVLConfig(text_config=_text("qwen2", len(tok)), vision_config=vision, downsample_ratio=0.5,
                               image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    images = tf.GotOcr2ImageProcessor(size={"height": side, "width": side}, crop_to_patches=True, max_patches=4,
                                      image_mean=_MEAN, image_std=_STD)
    videos = tf.InternVLVideoProcessor(size={"height": side, "width": side})
    _save(tf.InternVLForConditionalGeneration(config),
          tf.InternVLProcessor(image_processor=images, tokenizer=tok, video_processor=videos,
                               image_seq_length=(side // patch) ** 2 // 4, chat_template=_INTERNVL_TEMPLATE), out)


def _llava(out: str) -> None:
    """Llava: CLIP tower + projector + Llama, the image as a fixed run of <image> tokens."""
    import transformers as tf

    tok = tokenizer(["<image>"], {"image_token": "<image>"})
    side, patch = 32, 8
    vision = tf.CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                                 num_attention_heads=HEADS, image_size=side, patch_size=patch)
    config = tf.LlavaConfig(vision_config=vision, text_config=_text("llama", len(tok)),
                            image_token_index=tok.convert_tokens_to_ids("<image>"),
                            vision_feature_select_strategy="default", vision_feature_layer=-1)
    images = tf.CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                   image_mean=_MEAN, image_std=_STD)
    _save(tf.LlavaForConditionalGeneration(config),
          tf.LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=patch,
                            vision_feature_select_strategy="default", num_additional_image_tokens=1,
                            chat_template=_LLAVA_TEMPLATE), out)


FAMILIES: dict[str, Callable[[str], None]] = {
    "llava": _llava,
    "qwen2_vl": lambda out: _qwen("2", out),
    "qwen2_5_vl": lambda out: _qwen("2.5", out),
    "qwen3_vl": lambda out: _qwen("3", out),
    "idefics3": lambda out: _idefics("idefics3", out),
    "smolvlm": lambda out: _idefics("smolvlm", out),
    "paligemma": _paligemma,
    "gemma3": _gemma3,
    "internvl": _internvl,
}


def save_tiny_family(family: str, path: str, *, seed: int = 0) -> str:
    """A tiny random-initialised VLM of ``family`` (one of ``FAMILIES``) saved in the local directory ``path``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown VLM family {family!r}; expected one of {sorted(FAMILIES)}")
    os.makedirs(path, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the caller's RNG
        torch.manual_seed(seed)
        FAMILIES[family](path)
    return path
