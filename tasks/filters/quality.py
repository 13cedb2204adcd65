"""Quality pre-filters, each a threshold in the configuration (unset = off), so a pool is cleaned of what no
mid-training should see: images too small or too elongated, blank or blurred ones (variance of the Laplacian),
captions that are too short, too long or not text, image-text pairs that disagree (the backbone's own two
towers: the cosine between the image and text halves of the cached vector, no extra forward pass), and an
optional user-supplied linear probe on the image embedding (an NSFW or any other classifier).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic import Field
from scipy import ndimage

from core.settings import Settings, StorageConfig
from core.storage import read_bytes

_SHARPNESS_SIDE = 256  # sharpness is measured on the image shrunk to at most this side: a fixed cost per image


class ProbeFilterSpec(Settings):
    """A linear probe on the image embedding: ``sigmoid(x · w + b)`` above ``threshold`` removes the sample."""

    name: str = Field(description="Named in the quarantine reason (quality:NAME).")
    uri: str = Field(description=".npz with `weight` [D] and `bias` (scalar), fitted on this backbone's vectors.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability above which a sample is removed.")


class QualityConfig(Settings):
    """Thresholds of the quality pre-filters; every one left unset is off."""

    min_side: int = Field(0, ge=0, description="Smallest allowed image side in pixels (0 = off).")
    max_aspect: float | None = Field(None, ge=1, description="Largest long side / short side (None = off).")
    min_sharpness: float | None = Field(
        None, ge=0, description="Smallest variance of the Laplacian of the grey image (0-255 scale) at most "
        f"{_SHARPNESS_SIDE} px a side: blank images score 0, blurred ones a few units (None = off).")
    min_caption_chars: int = Field(0, ge=0, description="Fewest characters in a caption (0 = off).")
    max_caption_chars: int | None = Field(None, ge=1, description="Most characters in a caption (None = off).")
    min_letter_share: float = Field(
        0.0, ge=0, le=1, description="Smallest share of a caption's non-space characters that are letters: "
        "rejects captions of digits, symbols or file names (0 = off).")
    min_clip_score: float | None = Field(
        None, ge=-1, le=1, description="Smallest cosine between the image and text halves of the cached vector "
        "(image+text backbones of the CLIP kinds only; None = off).")
    probes: list[ProbeFilterSpec] = Field(default_factory=list, description="Linear probes on the image embedding.")

    @property
    def reads_pixels(self) -> bool:
        return bool(self.min_side or self.max_aspect or self.min_sharpness is not None)


@dataclass(frozen=True)
class ImageStats:
    width: int
    height: int
    sharpness: float


def image_stats(image: Image.Image) -> ImageStats:
    """Size and sharpness (variance of the Laplacian of the grey image, shrunk to a fixed side)."""
    width, height = image.size
    grey = image.convert("L")
    if max(width, height) > _SHARPNESS_SIDE:
        grey.thumbnail((_SHARPNESS_SIDE, _SHARPNESS_SIDE))
    sharpness = float(ndimage.laplace(np.asarray(grey, np.float32)).var())
    return ImageStats(width, height, sharpness)


def image_reason(stats: ImageStats, config: QualityConfig) -> str | None:
    """Why the image fails a threshold (``quality:...``), or None."""
    short, long = sorted((stats.width, stats.height))
    if config.min_side and short < config.min_side:
        return "quality:too_small"
    if config.max_aspect is not None and long > config.max_aspect * max(short, 1):
        return "quality:aspect_ratio"
    if config.min_sharpness is not None and stats.sharpness < config.min_sharpness:
        return "quality:blank_or_blurred"
    return None


def caption_reason(text: str, config: QualityConfig) -> str | None:
    """Why the caption fails a threshold (``quality:...``), or None."""
    if config.min_caption_chars and len(text.strip()) < config.min_caption_chars:
        return "quality:caption_too_short"
    if config.max_caption_chars is not None and len(text) > config.max_caption_chars:
        return "quality:caption_too_long"
    chars = [c for c in text if not c.isspace()]
    if config.min_letter_share and chars and sum(c.isalpha() for c in chars) < config.min_letter_share * len(chars):
        return "quality:caption_not_text"
    return None


def clip_scores(vectors: np.ndarray, image: slice, text: slice) -> np.ndarray:
    """Cosine between each row's image and text parts (the two towers' own agreement)."""
    a = vectors[:, image].astype(np.float32)
    b = vectors[:, text].astype(np.float32)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)


class LinearProbe:
    """A user's probe loaded from its ``.npz`` (checked against the vector width before any sample is scored)."""

    def __init__(self, spec: ProbeFilterSpec, weight: np.ndarray, bias: float) -> None:
        self.spec, self.weight, self.bias = spec, weight.astype(np.float32).ravel(), float(bias)

    @classmethod
    def load(cls, spec: ProbeFilterSpec, width: int, storage: StorageConfig | None = None) -> LinearProbe:
        with np.load(io.BytesIO(read_bytes(spec.uri, storage))) as data:
            if "weight" not in data or "bias" not in data:
                raise ValueError(f"probe {spec.name!r} at {spec.uri}: needs arrays `weight` and `bias`")
            weight, bias = data["weight"], float(np.asarray(data["bias"]).ravel()[0])
        if weight.size != width:
            raise ValueError(f"probe {spec.name!r}: weight has {weight.size} values, the image embedding {width}")
        return cls(spec, weight, bias)

    def removes(self, vectors: np.ndarray) -> np.ndarray:
        """Which rows the probe removes (probability above its threshold)."""
        logits = vectors.astype(np.float32) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-logits)) > self.spec.threshold
