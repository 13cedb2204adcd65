"""Planted web junk: a few samples of each pool shard replaced in place (the rest byte for byte as without junk),
each listed with its case, and every case what its name says."""

from __future__ import annotations

import hashlib
import io

import pandas as pd
import pytest
from PIL import Image

from core.read import Quarantine, read_source
from synth import SynthConfig, generate_corpus
from synth.junk import CASES, blocklisted_image
from tasks.filters.blocklist import image_phash
from tasks.filters.quality import QualityConfig, caption_reason, image_reason, image_stats

BASE = SynthConfig(seed=5, samples_per_source=40, shard_size=20, image_size=32, robot_episodes=2,
                   frames_per_episode=4, episodes_per_file=2)


def _samples(info) -> dict[str, tuple[bytes, str]]:
    out = {}
    for spec in info.pool:
        for batch in read_source(spec, quarantine=Quarantine()):
            out |= {i: (b, t) for i, b, t in zip(*(batch[c].to_pylist() for c in ("sample_id", "image", "text")),
                                                  strict=True)}
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("junk")
    clean = generate_corpus(str(root / "clean"), BASE)
    junk = generate_corpus(str(root / "junk"), BASE.model_copy(update={"junk_rate": 0.1}))
    return clean, junk


def test_junk_replaces_a_few_samples_in_place(corpora):
    clean, junk = corpora
    assert clean.planted_uri is None and junk.counts == clean.counts
    planted = pd.read_parquet(junk.planted_uri).set_index("sample_id")
    before, after = _samples(clean), _samples(junk)
    assert before.keys() == after.keys()
    changed = {i for i in before if before[i] != after[i]}
    assert changed == set(planted.index)
    assert len(planted) == 4 * 2 * 2 + 2  # 10% of each 20-sample shard, and the listed image and its copy
    assert set(planted["case"]) == {*CASES, "blocklisted", "blocklisted_copy"}
    truth = pd.read_parquet(junk.ground_truth_uri).set_index("sample_id")
    assert (truth.loc[planted.index[planted["case"] == "blank"], "scene"] == "blank").all()


def test_each_case_is_what_it_says(corpora):
    _, junk = corpora
    planted = pd.read_parquet(junk.planted_uri).set_index("sample_id")
    samples = _samples(junk)
    quality = QualityConfig(min_side=16, min_sharpness=10.0, min_caption_chars=10, min_letter_share=0.6)
    reasons = {}
    for i, case in planted["case"].items():
        data, text = samples[i]
        with Image.open(io.BytesIO(data)) as image:
            reasons[case] = reasons.get(case, set()) | {image_reason(image_stats(image), quality)
                                                         or caption_reason(text, quality)}
    assert reasons["blank"] == {"quality:blank_or_blurred"} and reasons["tiny"] == {"quality:too_small"}
    assert reasons["short_caption"] == {"quality:caption_too_short"}
    assert reasons["junk_caption"] == {"quality:caption_not_text"}
    assert reasons["exact_copy"] == reasons["near_copy"] == {None}  # copies pass every threshold
    listed = blocklisted_image(BASE.seed, BASE.image_size)
    by_case = {c: [samples[i][0] for i in planted.index[planted["case"] == c]] for c in set(planted["case"])}
    assert by_case["blocklisted"] == [listed]
    (copy,) = by_case["blocklisted_copy"]
    assert hashlib.sha256(copy).digest() != hashlib.sha256(listed).digest()
    with Image.open(io.BytesIO(copy)) as a, Image.open(io.BytesIO(listed)) as b:
        assert a.width < b.width and bin(image_phash(a.convert("RGB")) ^ image_phash(b.convert("RGB"))).count("1") <= 8
    for group, ids in planted[planted["case"] == "exact_copy"].groupby("copy_of").groups.items():
        assert len({samples[i][0] for i in ids}) == 1, group  # exact copies: the same bytes
