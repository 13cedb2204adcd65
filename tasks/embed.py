"""``Embed``: decode each sample's image and text and turn them into one frozen-backbone vector.

Input rows are samples plus an ``error`` column (null = usable): rows that already failed upstream pass
through untouched, so the driver sees every sample exactly once and can quarantine it with its reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image

from core.contracts import LOCATION
from core.settings import StorageConfig
from estimator.backbones import load_backbone
from estimator.backbones.base import Backbone, BackboneSpec
from tasks.base import Stage


def decode_image(data: bytes) -> Image.Image | None:
    """RGB image from encoded bytes, or None when they do not decode (Pillow raises many exception types)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except Exception:
        return None


def _column(batch: pa.Table, name: str, type_: pa.DataType | None = None) -> pa.Array:
    return batch[name] if name in batch.column_names else pa.nulls(batch.num_rows, type_ or pa.string())


def embedded_table(batch: pa.Table, vectors: np.ndarray, rows: list[int], errors: list[str | None]) -> pa.Table:
    """``batch``'s id and location columns plus a fixed-size ``embedding`` (null where ``errors`` says why).

    ``vectors`` is [len(rows), dim] even when no row was usable, so the column type never depends on the batch.
    """
    dim = vectors.shape[1]
    full = np.zeros((batch.num_rows, dim), dtype=np.float32)
    if rows:
        full[rows] = vectors
    mask = pa.array([e is not None for e in errors])
    flat = pa.array(full.reshape(-1), pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask)
    return pa.table(
        {
            "sample_id": batch["sample_id"],
            "source": batch["source"],
            "shard_uri": batch["shard_uri"],
            "key": batch["key"],
            "embedding": embedding,
            "error": pa.array(errors, pa.string()),
            "detail": _column(batch, "detail"),
            # Which stage set a row aside: the one before (carried through) or this one.
            "stage": pa.array(
                [
                    s if e is None or s else "embed"
                    for e, s in zip(errors, _column(batch, "stage").to_pylist(), strict=True)
                ],
                pa.string(),
            ),
            **{f.name: _column(batch, f.name, f.type) for f in LOCATION},  # where each sample is: for the manifest
        }
    )


@dataclass(kw_only=True)
class Embed(Stage):
    """Frozen-backbone vectors for a batch of samples; undecodable images are marked, not dropped."""

    name: ClassVar[str] = "embed"
    input_columns: ClassVar[tuple[str, ...]] = ("sample_id", "source", "shard_uri", "key", "image", "text", "error")
    output_columns: ClassVar[tuple[str, ...]] = (
        "sample_id",
        "source",
        "shard_uri",
        "key",
        "embedding",
        "error",
        "detail",
        "stage",
        *LOCATION.names,
    )
    backbone: BackboneSpec
    storage: StorageConfig | None = None
    model: Backbone | None = field(default=None, repr=False)

    def setup(self) -> None:
        if self.model is None:  # placed by the declared resources: GPU workers run bf16 unless dtype is set
            self.model = load_backbone(self.backbone.placed(gpu=self.resources.gpus > 0), self.storage)

    def process(self, batch: pa.Table) -> pa.Table:
        errors: list[str | None] = batch["error"].to_pylist()
        images, texts, rows = [], [], []
        for i, (data, text) in enumerate(zip(batch["image"].to_pylist(), batch["text"].to_pylist(), strict=True)):
            if errors[i] is not None:
                continue
            image = decode_image(data)
            if image is None:
                errors[i] = "undecodable_image"
                self.stats.update("dropped_undecodable_image")
                continue
            images.append(image)
            texts.append(text)
            rows.append(i)
        chunks = [
            self.model.embed(images[s : s + self.batch_size], texts[s : s + self.batch_size])
            for s in range(0, len(images), self.batch_size)
        ]
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, self.model.embed_dim), np.float32)
        self.stats.update("embedded", len(rows))
        return embedded_table(batch, vectors, rows, errors)
