"""Chat formatting: QA vs caption turns, labels on exactly the assistant's tokens, padding masked."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from training.chat import IGNORE, ChatEncoder, decode_image, split_qa
from training.stream import SkipSample
from training.vlm import load_vlm


@pytest.fixture(scope="module")
def encoder(tiny_vlm: str) -> ChatEncoder:
    return ChatEncoder(load_vlm(tiny_vlm)[1], max_length=512)


def _png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="PNG")
    return buf.getvalue()


def test_split_qa_tells_questions_from_captions():
    assert split_qa("Q: How many bars are in the chart? A: 4.") == ("How many bars are in the chart?", "4.")
    assert split_qa("Q: Does the document contain a table?\nA: yes.") == ("Does the document contain a table?",
                                                                           "yes.")
    assert split_qa("a bar chart with 4 bars") == (None, "a bar chart with 4 bars")


def test_labels_cover_exactly_the_assistant_tokens(encoder: ChatEncoder):
    sample = encoder.conversation(decode_image(_png()), "What is the title?", "Quarterly report.")
    ids, labels = sample["input_ids"], sample["labels"]
    labelled = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE]
    assert [lab for lab in labels if lab != IGNORE] == labelled  # a label is the token itself
    first = labels.index(next(lab for lab in labels if lab != IGNORE))
    assert all(lab == IGNORE for lab in labels[:first]) and all(lab != IGNORE for lab in labels[first:])
    tok = encoder.tokenizer
    assert tok.decode(labelled) == "Quarterly report.</s>\n"  # the answer and the template's end of turn
    assert tok.decode(ids[:first]).endswith("What is the title?\nassistant: ")
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == 16  # the processor expanded the image


def test_collate_masks_padding(encoder: ChatEncoder):
    image = decode_image(_png())
    short = encoder.conversation(image, "Describe the image.", "red.")
    long = encoder.conversation(image, "Describe the image.", "a red rectangle on nothing at all.")
    batch = encoder.collate([short, long])
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    assert batch["attention_mask"][0, :n].all() and not batch["attention_mask"][0, n:].any()
    assert (batch["labels"][0, n:] == IGNORE).all()
    assert batch["labels"][0, :n].tolist() == short["labels"]
    assert batch["pixel_values"].shape[0] == 2


def test_bad_samples_are_skipped_with_a_reason(encoder: ChatEncoder):
    with pytest.raises(SkipSample, match="undecodable_image"):
        decode_image(b"not an image")
    with pytest.raises(SkipSample, match="too_long"):
        ChatEncoder(encoder.processor, max_length=20).conversation(decode_image(_png()), "Describe.", "red.")


def test_a_processor_without_chat_template_is_refused(encoder: ChatEncoder):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="chat_template"):
        ChatEncoder(NoTemplate(), max_length=64)
