"""Samples in a VLM's own format: a chat template for chat models, prefix + suffix for prefix-LMs (PaliGemma).

A text "Q: <question> A: <answer>" (the VQA wording of the pool) becomes a user turn (image + question) and an
assistant turn (answer); any other text is a caption: a user turn (image + a fixed instruction) answered by the
caption. The prompt (everything up to and including the template's generation prompt) is tokenised with the
image, the assistant's part after it is tokenised on its own and appended, so labels cover exactly the
assistant's tokens (its answer and the template's end of turn) and everything else is -100.

Processors return more than token ids: per-token tensors (Qwen's ``mm_token_type_ids``, Gemma's
``token_type_ids``) travel with the tokens — extended over the answer, padded in a batch — and image tensors of
different sizes (Idefics3/SmolVLM crops, Qwen's patch lists) are padded with zeros to one shape or concatenated.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from training.stream import SkipSample, pad_sequences

IGNORE = -100
_QA = re.compile(r"^\s*Q:\s*(?P<q>.+?)\s*A:\s*(?P<a>.+?)\s*$", re.DOTALL)
# Prefix-LM families: the processor builds prefix + suffix itself (its ``suffix=`` argument), no chat turns.
PREFIX_LM_PROCESSORS = ("PaliGemmaProcessor",)


def split_qa(text: str) -> tuple[str | None, str]:
    """(question, answer) for a QA text, (None, text) for a caption."""
    m = _QA.match(text)
    return (m["q"], m["a"]) if m else (None, text.strip())


def decode_image(data: bytes | None) -> Image.Image:
    """RGB image from encoded bytes; undecodable bytes skip the sample."""
    if not data:
        raise SkipSample("no_image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise SkipSample("undecodable_image") from None


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _pad_to(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad every dimension but the first up to ``shape`` (padding at the end)."""
    pad = [p for have, want in zip(reversed(tensor.shape[1:]), reversed(shape), strict=True) for p in (0, want - have)]
    return F.pad(tensor, pad) if any(pad) else tensor


def stack_images(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One batch tensor from per-sample image tensors: concatenated on the first dimension (images, crops or
    patches), after zero-padding the others to their largest size (models skip all-zero padding crops)."""
    shape = tuple(max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim()))
    return torch.cat([_pad_to(t, shape) for t in tensors])


class Encoder:
    """What both formats share: the processor call, per-token keys kept as lists, truncation and collation."""

    def __init__(self, processor: Any, *, max_length: int) -> None:
        self.processor, self.max_length = processor, max_length
        self.tokenizer = processor.tokenizer
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def _process(self, image: Image.Image, text: str, **kwargs: Any) -> dict:
        """The processor's output for one sample: per-token tensors ([1, T], T the number of tokens) as lists
        (``input_ids`` first), everything else (images, grids) as tensors."""
        try:
            out = self.processor(images=[image], text=[text], return_tensors="pt", **kwargs)
        except (ValueError, RuntimeError):
            raise SkipSample("untokenisable") from None
        ids = out["input_ids"][0].tolist()
        if len(ids) > self.max_length:
            raise SkipSample("too_long")
        sample: dict = {"input_ids": ids}
        for key, value in out.items():
            # labels are made here (a prefix-LM processor returns its own: not over the appended answer)
            if key in ("input_ids", "attention_mask", "labels") or not isinstance(value, torch.Tensor):
                continue
            per_token = value.dim() == 2 and value.shape == (1, len(ids))
            sample[key] = value[0].tolist() if per_token else value
        return sample

    def _append(self, sample: dict, reply: list[int]) -> dict:
        """``sample`` with ``reply`` appended (cut to ``max_length``), labelled; other per-token keys get 0."""
        room = self.max_length - len(sample["input_ids"])
        if not reply:
            raise SkipSample("empty_answer")
        if room < 1:
            raise SkipSample("too_long")
        reply = reply[:room]  # a long answer is cut, never the prompt (it holds the image tokens)
        for key, value in sample.items():
            if isinstance(value, list) and key != "input_ids":
                sample[key] = value + [0] * len(reply)
        sample["labels"] = [IGNORE] * len(sample["input_ids"]) + reply
        sample["input_ids"] = sample["input_ids"] + reply
        return sample

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad per-token rows (padding masked and unlabelled); pad and concatenate the image tensors."""
        ids = [s["input_ids"] for s in samples]
        batch = {"input_ids": pad_sequences(ids, self.pad_id),
                 "attention_mask": pad_sequences([[1] * len(r) for r in ids], 0)}
        for key, value in samples[0].items():
            if key == "input_ids":
                continue
            if isinstance(value, list):
                batch[key] = pad_sequences([s[key] for s in samples], IGNORE if key == "labels" else 0)
            else:
                batch[key] = stack_images([s[key] for s in samples])
        return batch


class ChatEncoder(Encoder):
    """Turns (image, user text[, answer]) into model inputs with the processor's chat template."""

    def __init__(self, processor: Any, *, max_length: int) -> None:
        if not getattr(processor, "chat_template", None):
            raise ValueError("chat_template: the model's processor has no chat template; give one in the config "
                             "(a Jinja template over user/assistant turns with an image item)")
        super().__init__(processor, max_length=max_length)

    def _render(self, messages: list[dict], *, generation_prompt: bool) -> str:
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        # The template's text carries the special tokens; add BOS only where the template leaves it out.
        bos = self.tokenizer.bos_token
        return text if not bos or text.startswith(bos) else bos + text

    def prompt(self, image: Image.Image, text: str) -> dict:
        """Inputs for a user turn (image + text) followed by the generation prompt."""
        return self._process(image, self._render([_user(text)], generation_prompt=True), add_special_tokens=False)

    def conversation(self, image: Image.Image, user: str, answer: str) -> dict:
        """Inputs and labels for user turn + assistant answer; labels only on the assistant's tokens."""
        sample = self.prompt(image, user)
        prompt = self._render([_user(user)], generation_prompt=True)
        full = self._render([_user(user), _assistant(answer)], generation_prompt=False)
        if not full.startswith(prompt):
            raise SkipSample("template_not_prefix")
        return self._append(sample, self.tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"])


class PrefixLMEncoder(Encoder):
    """A prefix-LM's format (PaliGemma): image tokens + BOS + prefix + newline, attended both ways, then the
    answer and EOS as the suffix, attended causally (the processor's ``token_type_ids``: 0 prefix, 1 suffix)."""

    def _prefix(self, text: str) -> str:
        return f"{self.processor.image_token}{text}"  # one image, placed where the processor expects it

    def prompt(self, image: Image.Image, text: str) -> dict:
        return self._process(image, self._prefix(text))

    def conversation(self, image: Image.Image, user: str, answer: str) -> dict:
        reply = self.tokenizer(answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        sample = self._append(self.prompt(image, user), reply)
        answered = sum(label != IGNORE for label in sample["labels"])
        types = sample["token_type_ids"]
        sample["token_type_ids"] = types[:len(types) - answered] + [1] * answered
        return sample


def make_encoder(processor: Any, *, max_length: int) -> Encoder:
    """The encoder for the model's format: its chat template when it has one (shipped or set from the config's
    ``chat_template``), else prefix + suffix for prefix-LM families; other models are refused."""
    if not getattr(processor, "chat_template", None) and type(processor).__name__ in PREFIX_LM_PROCESSORS:
        return PrefixLMEncoder(processor, max_length=max_length)
    return ChatEncoder(processor, max_length=max_length)
