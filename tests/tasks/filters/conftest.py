"""Images for the filter tests: photo-like textures that differ from seed to seed, encoded as a reader sees them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def photo(seed: int, size: int = 96) -> Image.Image:
    """A smooth pattern with a few coloured patches and sensor-like noise: distinct per seed, like photographs."""
    r = np.random.default_rng(seed)
    x = np.linspace(0, 1, size)
    pattern = np.outer(np.sin(x * r.uniform(2, 9)), np.cos(x * r.uniform(2, 9)))[..., None]
    img = pattern * r.uniform(60, 120, 3) + 128 + r.normal(0, 8, (size, size, 3))
    for _ in range(5):
        a, b = r.integers(0, size - 16, 2)
        img[a:a + 16, b:b + 16] = r.uniform(0, 255, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture
def images():
    return photo, encode
