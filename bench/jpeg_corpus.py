"""WebDataset shards of 224-px JPEGs with captions: what ``bench embed`` feeds the models. The synthetic corpus's
images are 64 px and half of them PNG, so decoding them costs a fraction of what a web image costs; these are
photo-sized for a ViT's input (224 x 224, quality 90, ~15-25 KB: smooth colour fields plus noise, so the encoder
has texture to code, unlike a flat image).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from core.settings import SourceSpec


def _image(rng: np.random.Generator, size: int) -> bytes:
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=90)
    return out.getvalue()


def jpeg_shards(root: Path, *, samples: int, shard_size: int, size: int = 224, seed: int = 0
                ) -> list[tuple[SourceSpec, str]]:
    """``samples`` JPEGs of ``size`` px in tars of ``shard_size`` under ``root`` (written once, kept); the
    ``(spec, shard_uri)`` pairs ``bench embed`` runs on."""
    folder = (root / f"jpeg{size}-{samples}-{shard_size}-{seed}").resolve()
    done = folder / "_DONE"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for shard, start in enumerate(range(0, samples, shard_size)):
            with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
                for i in range(start, min(start + shard_size, samples)):
                    for ext, data in (("jpg", _image(rng, size)), ("txt", f"a photo, sample {i}".encode())):
                        info = tarfile.TarInfo(f"{i:08d}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        done.write_text("ok")
    spec = SourceSpec(name=f"jpeg{size}", format="webdataset", uri=str(folder / "*.tar"))
    return [(spec, str(p)) for p in sorted(folder.glob("*.tar"))]
