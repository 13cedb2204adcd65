"""Planted web junk (``SynthConfig.junk_rate``): the cases a real web pool carries at a few percent, so the
filters have something to remove — blank or near-blank images, thumbnails too small to learn from, placeholder
and file-name captions, exact byte copies and re-encoded, resized copies of a few popular images reposted across
sources, and one image on a blocklist (in ``photos``) with a resized copy of it (in ``tabletop``).

A planted sample replaces an ordinary one in place, so the pool keeps its size and every other sample its bytes.
Which samples are replaced, and by what, is a pure function of (seed, source, shard), like the shard itself.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from synth.scenes import draw_scene, stable_rng

PLANTED = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("case", pa.string(), nullable=False),  # one of CASES, or "blocklisted" / "blocklisted_copy"
        pa.field("copy_of", pa.string()),  # the image a copy repeats ("popular/N", "blocklisted"), else null
    ]
)
# In turn, so every rate gets every case; copies twice, since duplicates are the commonest junk of web pools.
CASES = ("exact_copy", "blank", "near_copy", "tiny", "short_caption", "exact_copy", "junk_caption", "near_copy")
# The reposted images: one robot-like (the kind of cluster that fills a top-K when nothing removes it), two not.
POPULAR = ("tabletop", "indoor", "photo")
# Where the blocklisted image and its resized copy sit: shard 0 of these sources (present in every corpus).
BLOCKLISTED_IN = {"photos": "blocklisted", "tabletop": "blocklisted_copy"}
_SHORT = ("image", "photo", "untitled", "pic", ".")
_JUNK = ("IMG_{n:04d}.JPG", "DSC{n:05d}.JPG", "{n:08d}_{m:06d}.jpg", "#{n} {m}", "{n}x{m} px", "0x{n:08x}")


@dataclass
class Sample:
    """One pool sample before it is written: encoded image, text and the scene its ground truth names."""

    image: bytes
    text: str
    scene: str


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def popular_image(seed: int, index: int, size: int) -> tuple[Image.Image, str]:
    """The ``index``-th reposted image and its caption (the same in every shard and source)."""
    return draw_scene(POPULAR[index], stable_rng(seed, "popular", index), size, qa=False)


def blocklisted_image(seed: int, size: int) -> bytes:
    """The encoded bytes of the corpus's one blocklisted image (a list names it by SHA-256 and pHash)."""
    image, _ = draw_scene("photo", stable_rng(seed, "blocklisted", 0), size, qa=False)
    return encode(image)


def _resized(image: Image.Image, rng: np.random.Generator) -> bytes:
    """A re-encoded, smaller copy: 75-95% of each side, JPEG quality 70-90."""
    side = max(int(image.width * rng.uniform(0.75, 0.95)), 1)
    return encode(image.resize((side, side), Image.Resampling.BILINEAR), quality=int(rng.integers(70, 91)))


def _blank(rng: np.random.Generator, size: int) -> Image.Image:
    """A flat colour or a soft vertical gradient (a placeholder, a failed load, a lens cap)."""
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, rng.uniform(0, 24), size)[:, None, None] if rng.random() < 0.5 else 0
    pixels = np.clip(base[None, None, :] + ramp + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _planted(case: str, sample: Sample, rng: np.random.Generator, *, seed: int, size: int) -> tuple[Sample, str | None]:
    """The sample that replaces ``sample`` in ``case``, and the image it copies (if it is a copy)."""
    if case == "blank":
        return Sample(encode(_blank(rng, size)), sample.text, "blank"), None
    if case == "tiny":
        image = Image.open(io.BytesIO(sample.image)).convert("RGB")
        side = max(size // 4, 4)
        return Sample(encode(image.resize((side, side), Image.Resampling.BILINEAR)), sample.text, sample.scene), None
    if case == "short_caption":
        return Sample(sample.image, _SHORT[int(rng.integers(len(_SHORT)))], sample.scene), None
    if case == "junk_caption":
        n, m = (int(v) for v in rng.integers(1, 100_000, 2))
        return Sample(sample.image, _JUNK[int(rng.integers(len(_JUNK)))].format(n=n, m=m), sample.scene), None
    if case in ("exact_copy", "near_copy"):
        index = int(rng.integers(len(POPULAR)))
        image, text = popular_image(seed, index, size)
        data = encode(image) if case == "exact_copy" else _resized(image, rng)
        return Sample(data, text, POPULAR[index]), f"popular/{index}"
    data = blocklisted_image(seed, size)  # "blocklisted", or its resized copy
    if case == "blocklisted_copy":
        data = _resized(Image.open(io.BytesIO(data)).convert("RGB"), rng)
    return Sample(data, sample.text, "photo"), "blocklisted"


def plant(samples: list[Sample], *, source: str, shard: int, seed: int, size: int, rate: float
          ) -> list[tuple[int, str, str | None]]:
    """Replace ``round(rate * len(samples))`` samples in place (cases in turn, continuing across shards) and, in
    shard 0 of the sources in ``BLOCKLISTED_IN``, one more; return (index, case, copy_of) of each."""
    if rate <= 0 or not samples:
        return []
    rng = stable_rng(seed, f"junk/{source}", shard)
    count = min(round(rate * len(samples)), len(samples))
    start = shard * count + zlib.crc32(source.encode())  # sources start at different cases
    cases = [CASES[(start + j) % len(CASES)] for j in range(count)]
    if shard == 0 and source in BLOCKLISTED_IN:
        cases.append(BLOCKLISTED_IN[source])
    slots = rng.choice(len(samples), size=min(len(cases), len(samples)), replace=False)
    planted = []
    for index, case in zip(sorted(int(s) for s in slots), cases, strict=False):
        samples[index], copy_of = _planted(case, samples[index], rng, seed=seed, size=size)
        planted.append((index, case, copy_of))
    return planted
