"""Quality pre-filters at their thresholds: small, elongated, blank and blurred images; short, long and non-text
captions; image-text disagreement from the two towers' halves; a user's linear probe on the image embedding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tasks.filters.quality import (
    LinearProbe,
    ProbeFilterSpec,
    QualityConfig,
    caption_reason,
    clip_scores,
    image_reason,
    image_stats,
)
from tests.tasks.filters.conftest import photo


def _reason(image: Image.Image, **thresholds) -> str | None:
    return image_reason(image_stats(image), QualityConfig(**thresholds))


def test_size_and_aspect_ratio():
    assert _reason(photo(1, size=96), min_side=64) is None
    assert _reason(photo(1, size=32), min_side=64) == "quality:too_small"
    wide = photo(1, size=96).resize((300, 60))
    assert _reason(wide, max_aspect=4.0) == "quality:aspect_ratio" and _reason(wide, max_aspect=5.0) is None


def test_blank_and_blurred_images_score_low_sharpness():
    sharp = image_stats(photo(1)).sharpness
    blurred = image_stats(photo(1).filter(ImageFilter.GaussianBlur(3))).sharpness
    blank = image_stats(Image.new("RGB", (96, 96), (200, 30, 30))).sharpness
    assert blank == 0.0 and blurred < sharp / 10
    threshold = {"min_sharpness": 5.0}
    assert _reason(Image.new("RGB", (96, 96), "white"), **threshold) == "quality:blank_or_blurred"
    assert _reason(photo(1), **threshold) is None
    big = image_stats(photo(1).resize((2000, 2000)))  # measured shrunk: a fixed cost, same kind of figure
    assert (big.width, big.height) == (2000, 2000) and big.sharpness > 0


@pytest.mark.parametrize("text, reason", [
    ("a red mug on a wooden table", None),
    ("mug", "quality:caption_too_short"),
    ("word " * 100, "quality:caption_too_long"),
    ("1234 5678 %%% ###", "quality:caption_not_text"),
    ("IMG_2041.JPG 12/08/2019 14:32", "quality:caption_not_text"),
])
def test_caption_checks(text, reason):
    config = QualityConfig(min_caption_chars=5, max_caption_chars=200, min_letter_share=0.6)
    assert caption_reason(text, config) == reason


def test_everything_off_by_default():
    config = QualityConfig()
    assert image_reason(image_stats(Image.new("RGB", (2, 40))), config) is None
    assert caption_reason("%", config) is None and not config.reads_pixels


def test_clip_score_is_the_cosine_of_the_two_halves():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 8))
    text = np.stack([image[0], -image[1], rng.normal(size=8), 3 * image[3]])
    scores = clip_scores(np.hstack([image, text]).astype(np.float16), slice(0, 8), slice(8, 16))
    assert scores[0] == pytest.approx(1, abs=1e-3) and scores[1] == pytest.approx(-1, abs=1e-3)
    assert scores[3] == pytest.approx(1, abs=1e-3) and -1 < scores[2] < 1


def test_a_linear_probe_removes_above_its_threshold_and_checks_its_width(tmp_path):
    weight = np.zeros(6, np.float32)
    weight[2] = 4.0
    np.savez(tmp_path / "probe.npz", weight=weight, bias=np.array(-2.0))
    spec = ProbeFilterSpec(name="nsfw", uri=str(tmp_path / "probe.npz"), threshold=0.5)
    probe = LinearProbe.load(spec, width=6)
    vectors = np.zeros((3, 6), np.float32)
    vectors[:, 2] = [0.0, 0.49, 0.9]  # logits -2, -0.04, 1.6
    assert probe.removes(vectors).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="weight has 6 values, the image embedding 8"):
        LinearProbe.load(spec, width=8)
    np.savez(tmp_path / "bad.npz", w=weight)
    with pytest.raises(ValueError, match="needs arrays `weight` and `bias`"):
        LinearProbe.load(spec.model_copy(update={"uri": str(tmp_path / "bad.npz")}), width=6)
