"""Which columns of a sample vector come from which part of the input, and scorers that read only some of them.

The CLIP kinds' vector with ``modality="image+text"`` is ``concat(L2(image), L2(text))``: its first half is the
image tower's, its second the text tower's. Knowing that lets a run score on the image part alone (the default:
robot instructions are worded unlike web captions, and a scorer that reads the text learns the wording) while
still probing the text part for the shortcut diagnostic. An hf_vlm vector fuses image and text tokens in one
hidden state: it has a single part, ``fused``, and no per-modality diagnostic.
"""

from __future__ import annotations

import numpy as np

from estimator.backbones.kinds import KINDS
from estimator.config import Part
from estimator.probe import as_features


def feature_parts(kind: str, modality: str, embed_dim: int) -> dict[str, slice]:
    """Column slices of the vector by part: ``image`` and/or ``text`` for the CLIP kinds, ``fused`` for hf_vlm."""
    return KINDS[kind].parts(modality, embed_dim)


def columns_for(part: Part, parts: dict[str, slice], embed_dim: int) -> tuple[slice, str]:
    """The columns a scorer reading ``part`` uses, and what they are called in the run's metrics.

    A fused vector (hf_vlm) has no image part to keep apart: every column is used and named ``fused``. Asking for
    a part that a two-tower vector lacks (``image`` when only the text tower was embedded) is an error.
    """
    if part == "all" or "fused" in parts:
        return slice(0, embed_dim), "all" if part == "all" else "fused"
    if part not in parts:
        raise ValueError(f"scorer.features={part!r}, but the backbone's vectors hold only {sorted(parts)}; "
                         f"embed with backbone.modality='image+text' (or '{part}') or set scorer.features='all'")
    return parts[part], part


class ColumnScorer:
    """A scorer fitted on some columns, scoring full vectors by reading only those columns."""

    def __init__(self, inner: object, columns: slice) -> None:
        self.inner, self.columns = inner, columns
        self.name: str = inner.name  # type: ignore[attr-defined]

    def score(self, features: np.ndarray, ids: list[str] | None = None) -> np.ndarray:
        x = as_features(features, name="scored")
        return self.inner.score(x[:, self.columns], ids)  # type: ignore[attr-defined]
