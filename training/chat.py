"""Samples in a VLM's own chat format, through its processor's chat template.

A text "Q: <question> A: <answer>" (the VQA wording of the pool) becomes a user turn (image + question) and an
assistant turn (answer); any other text is a caption: a user turn (image + a fixed instruction) answered by the
caption. The prompt (everything up to and including the template's generation prompt) is tokenised with the
image, the assistant's part after it is tokenised on its own and appended, so labels cover exactly the
assistant's tokens (its answer and the template's end of turn) and everything else is -100.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from training.stream import SkipSample, pad_sequences

IGNORE = -100
_QA = re.compile(r"^\s*Q:\s*(?P<q>.+?)\s*A:\s*(?P<a>.+?)\s*$", re.DOTALL)


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


class ChatEncoder:
    """Turns (image, user text[, answer]) into model inputs with the processor's chat template."""

    def __init__(self, processor: Any, *, max_length: int) -> None:
        if not getattr(processor, "chat_template", None):
            raise ValueError("the model's processor has no chat_template; training needs one to format turns")
        self.processor, self.max_length = processor, max_length
        self.tokenizer = processor.tokenizer
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def _render(self, messages: list[dict], *, generation_prompt: bool) -> str:
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        # The template's text carries the special tokens; add BOS only where the template leaves it out.
        bos = self.tokenizer.bos_token
        return text if not bos or text.startswith(bos) else bos + text

    def prompt(self, image: Image.Image, text: str) -> dict:
        """Inputs for a user turn (image + text) followed by the generation prompt."""
        rendered = self._render([_user(text)], generation_prompt=True)
        try:
            out = self.processor(images=[image], text=[rendered], add_special_tokens=False, return_tensors="pt")
        except (ValueError, RuntimeError):
            raise SkipSample("untokenisable") from None
        sample = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
        sample["input_ids"] = out["input_ids"][0].tolist()
        if len(sample["input_ids"]) > self.max_length:
            raise SkipSample("too_long")
        return sample

    def conversation(self, image: Image.Image, user: str, answer: str) -> dict:
        """Inputs and labels for user turn + assistant answer; labels only on the assistant's tokens."""
        sample = self.prompt(image, user)
        prompt = self._render([_user(user)], generation_prompt=True)
        full = self._render([_user(user), _assistant(answer)], generation_prompt=False)
        if not full.startswith(prompt):
            raise SkipSample("template_not_prefix")
        reply = self.tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        if not reply or len(sample["input_ids"]) + len(reply) > self.max_length:
            raise SkipSample("too_long" if reply else "empty_answer")
        sample["labels"] = [IGNORE] * len(sample["input_ids"]) + reply
        sample["input_ids"] = sample["input_ids"] + reply
        return sample

    def collate(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad token rows (padding masked and unlabelled); concatenate the image tensors."""
        ids = [s["input_ids"] for s in samples]
        batch = {"input_ids": pad_sequences(ids, self.pad_id),
                 "attention_mask": pad_sequences([[1] * len(r) for r in ids], 0)}
        if "labels" in samples[0]:
            batch["labels"] = pad_sequences([s["labels"] for s in samples], IGNORE)
        for key in samples[0]:
            if key not in ("input_ids", "labels"):
                batch[key] = torch.cat([s[key] for s in samples])
        return batch
