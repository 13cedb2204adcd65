"""The report's figures kept by what they were drawn from.

A figure is a pure function of its inputs (the sampled vectors, scores, example images and the drawing code), so a
report whose inputs did not change — a re-run on cached embeddings, or a report rebuilt for the same manifest —
reads each PNG back instead of drawing it again (drawing is most of a report's time: the t-SNE map alone seconds).
The 2-D map's coordinates are kept apart from its PNG: they depend on the sampled points only, not on which of them
were selected, so a re-run with another K re-draws the map without running t-SNE again.

Kept under ``{cache root}/report-figures/{digest}.{png,npy}``: beside the embeddings they come from, on the same
storage, shared by every run of that cache. Deleting the folder costs a redraw, nothing else.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import sklearn

from core.digest import content_digest, source_digest
from core.location import Location
from tasks.report import figures

FOLDER = "report-figures"


def _code() -> str:
    """What else decides a figure's pixels: the drawing code and the libraries that draw it."""
    return content_digest(source_digest(figures), matplotlib.__version__, sklearn.__version__)


@dataclass(frozen=True)
class FigureMemo:
    """``root``: the folder figures are kept in; None keeps nothing (every figure is drawn)."""

    root: Location | None

    @classmethod
    def beside(cls, cache_uri: str | None, storage: Any = None) -> FigureMemo:
        """The memo under an embedding cache root (none for a run that recorded no cache)."""
        return cls(Location(cache_uri, storage).join(FOLDER) if cache_uri else None)

    def _kept(self, name: str, suffix: str, inputs: tuple, compute: Callable[[], bytes]) -> bytes:
        if self.root is None:
            return compute()
        where = self.root.join(f"{name}-{content_digest(name, _code(), *inputs)[:32]}{suffix}")
        try:
            return where.read_bytes()
        except FileNotFoundError:
            pass
        data = compute()
        where.publish_bytes(data)
        return data

    def png(self, name: str, draw: Callable[..., bytes], *inputs: Any, **options: Any) -> bytes:
        """``draw(*inputs, **options)``, or the PNG it returned before for equal inputs and options."""
        return self._kept(name, ".png", (inputs, options), lambda: draw(*inputs, **options))

    def map_coordinates(self, points: np.ndarray, *, seed: int) -> np.ndarray:
        """``figures.tsne_2d(points, seed=seed)``, or the coordinates it returned before for equal points."""

        def compute() -> bytes:
            buf = io.BytesIO()
            np.save(buf, figures.tsne_2d(points, seed=seed), allow_pickle=False)
            return buf.getvalue()

        return np.load(io.BytesIO(self._kept("tsne", ".npy", (np.asarray(points, np.float32), seed), compute)))
