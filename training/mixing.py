"""General caption/VQA data mixed into mid-training, so the VLM keeps its general skills while it moves toward
robot-like data (continued pre-training that mixes a caption loss preserves the VLM: VLAct, 2026).

The general samples are a second manifest's selected rows, or the curation manifest's own unselected rows; at
most ``mix.max_samples`` of them, a seeded uniform sample. ``MixedSource`` interleaves them with the curated
samples so that ``mix.ratio`` of the stream is general on average, in an order fixed by (seed, epoch): an epoch is
one pass over the curated samples, and the general rows are read from their start again in each epoch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.settings import StorageConfig
from core.storage import exists
from training.config import MixSpec
from training.sources import read_manifest

Source = Callable[[int], Iterable[Any]]


def general_rows(manifest_uri: str, mix: MixSpec, storage: StorageConfig | None = None, *,
                 seed: int = 0) -> tuple[str, pa.Table]:
    """(manifest URI, rows) of the general samples; a ValueError naming ``data.mix`` when there are none."""
    uri = mix.manifest_uri or manifest_uri
    if mix.manifest_uri and not exists(mix.manifest_uri, storage):
        raise ValueError(f"data.mix.manifest_uri {mix.manifest_uri!r}: no such manifest")
    if mix.manifest_uri:
        rows = read_manifest(uri, storage, selected_only=True)
    else:
        table = read_manifest(uri, storage)
        rows = table.filter(pc.invert(table["selected"]))
    if rows.num_rows == 0:
        where = "the mix manifest selects" if mix.manifest_uri else "the manifest leaves unselected"
        raise ValueError(f"data.mix: no general samples ({where} no rows)")
    if rows.num_rows > mix.max_samples:
        picked = np.random.default_rng([seed, 0x6D6978]).choice(rows.num_rows, mix.max_samples, replace=False)
        rows = rows.take(np.sort(picked))
    return uri, rows


class MixedSource:
    """``source(epoch)``: every item of ``primary(epoch)``, with items of ``general`` before each one while a
    seeded draw falls under ``ratio`` (a geometric count: ``ratio`` of the stream is general on average)."""

    def __init__(self, primary: Source, general: Source, *, ratio: float, seed: int) -> None:
        self.primary, self.general, self.ratio, self.seed = primary, general, ratio, seed

    def __call__(self, epoch: int) -> Iterator[Any]:
        rng = np.random.default_rng([self.seed, epoch, 0x6D6978])
        general = itertools.chain.from_iterable(self.general(e) for e in itertools.count())
        for item in self.primary(epoch):
            while rng.random() < self.ratio:
                yield next(general)
            yield item
