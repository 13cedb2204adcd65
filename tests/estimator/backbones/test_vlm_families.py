"""The hf_vlm backbone embeds with every VLM family transformers ships: a batch of images of different sizes gives
each sample the vector it gets alone (no padding, crop or prompt of one sample leaks into another's)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from estimator.backbones import load_backbone
from estimator.backbones.backbone import BackboneSpec
from estimator.backbones.tiny_vlms import FAMILIES, save_tiny_family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_embeds_each_sample_as_it_would_alone(family: str, tmp_path):
    backbone = load_backbone(BackboneSpec(kind="hf_vlm", model=save_tiny_family(family, str(tmp_path / family))))
    sizes = [(40, 30), (96, 20), (33, 81)]
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8))
              for i, (w, h) in enumerate(sizes)]
    texts = ["a cube", "two red cubes on a wooden table, seen from above", "Q: how many? A: 3"]
    batch = backbone.embed(images, texts)
    assert batch.shape == (3, backbone.embed_dim) and np.isfinite(batch).all()
    alone = np.concatenate([backbone.embed([im], [t]) for im, t in zip(images, texts, strict=True)])
    np.testing.assert_allclose(batch, alone, rtol=1e-3, atol=1e-4)
    assert not np.allclose(batch[0], batch[1])
