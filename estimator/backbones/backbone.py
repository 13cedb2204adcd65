"""What every frozen backbone offers: one pooled feature vector per (image, text) sample, and a fingerprint.

A backbone is two halves. Its ``preprocessor`` (CPU work, no weights: resize, crop, tokenise) turns decoded images
and texts into a ``Prepared`` batch of plain arrays (uint8 pixels where the model allows), which pickles cheaply
and can run in a CPU task anywhere on the cluster; ``forward`` moves such a batch to the model's device and runs
the model. ``embed`` is the two in one process.

The fingerprint names everything that changes the vectors (model, weights, preprocessing, pooling, dtype), so an
embedding cache keyed by it can never serve vectors of another model; ``fingerprint.describe`` computes it from
the model's files without loading it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from PIL import Image

from estimator.backbones.fingerprint import describe
from estimator.backbones.spec import BackboneSpec

Prepared = dict[str, np.ndarray]  # one forward pass's inputs, as arrays that cross process boundaries cheaply


class Preprocessor(ABC):
    """The CPU half of a backbone: picklable, holds no weights, so CPU tasks can run it beside the model.
    ``draft_size``: decode JPEGs reduced to no less than this many pixels a side (None = in full)."""

    draft_size: int | None = None

    @abstractmethod
    def __call__(self, images: list[Image.Image], texts: list[str]) -> Prepared:
        """Model inputs for (images[i], texts[i]); every array's first axis is the sample."""


class Backbone(ABC):
    """A frozen feature extractor. Subclasses load the model in ``__init__`` (once per worker) and set
    ``files_spec`` (the spec pointing at the files actually loaded, in the dtype actually used) and
    ``preprocessor``."""

    spec: BackboneSpec
    files_spec: BackboneSpec
    embed_dim: int
    preprocessor: Preprocessor
    _fingerprint: str | None = None

    @abstractmethod
    def forward(self, batch: Prepared) -> np.ndarray:
        """Float32 array [n, embed_dim] for a batch the ``preprocessor`` made of n samples."""

    def embed(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Float32 array [len(images), embed_dim]; row i is the vector of (images[i], texts[i])."""
        return self.forward(self.preprocessor(images, texts))

    @property
    def fingerprint(self) -> str:
        """The fingerprint of what was loaded, from its files (``fingerprint.describe``): equal to the one a
        driver computes for the same files and placement without loading anything."""
        if self._fingerprint is None:  # hashing streams the weights once: do it once
            self._fingerprint = describe(self.files_spec).fingerprint
        return self._fingerprint
