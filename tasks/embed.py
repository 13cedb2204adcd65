"""``Embed``: decode each sample's image and text and turn them into one frozen-backbone vector.

Two halves, so they can run apart: ``prepare_rows`` (CPU: decode, then the backbone's preprocessor) and
``Embed.finish`` (the model's forward pass). The embedding job runs the first in CPU tasks and the second in the
actors that hold the model (``tasks.prepare``, ``tasks.embed_shards``).

Input rows are samples plus an ``error`` column (null = usable): rows that already failed upstream pass
through untouched, so the driver sees every sample exactly once and can quarantine it with its reason.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from core.contracts import CONTENT_HASH, LOCATION
from core.settings import StorageConfig
from estimator.backbones import load_backbone
from estimator.backbones.backbone import Backbone, BackboneSpec, Prepared, Preprocessor
from tasks.executor import Resources


def decode_image(data: bytes, draft_size: int | None = None) -> Image.Image | None:
    """RGB image from encoded bytes, or None when they do not decode (Pillow raises many exception types).
    With ``draft_size``, a JPEG is decoded at the smallest DCT scale keeping both sides >= ``draft_size``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if draft_size:
                img.draft("RGB", (draft_size, draft_size))  # JPEG only; a no-op for other formats
            return img.convert("RGB")
    except Exception:
        return None


PREPARE_COLUMNS = ("image", "text", "error")  # what ``prepare_rows`` reads of a batch


@dataclass
class PreparedRows:
    """A batch ready for the model: ``chunks`` of at most ``batch_size`` usable samples each (one forward pass
    apiece), ``rows`` the usable samples' positions in the batch, ``errors`` one per row (None = usable)."""

    rows: list[int]
    errors: list[str | None]
    chunks: list[Prepared]


def prepare_rows(preprocessor: Preprocessor, batch: pa.Table, batch_size: int) -> PreparedRows:
    """Decode every usable row's image and run the backbone's preprocessor, ``batch_size`` samples at a time
    (the forward passes' size, so a text padded per call pads exactly as one forward pass of them would)."""
    errors: list[str | None] = batch["error"].to_pylist()
    images, texts, rows = [], [], []
    for i, (data, text) in enumerate(zip(batch["image"].to_pylist(), batch["text"].to_pylist(), strict=True)):
        if errors[i] is not None:
            continue
        image = decode_image(data, preprocessor.draft_size)
        if image is None:
            errors[i] = "undecodable_image"
            continue
        images.append(image)
        texts.append(text)
        rows.append(i)
    chunks = [preprocessor(images[s : s + batch_size], texts[s : s + batch_size])
              for s in range(0, len(images), batch_size)]
    return PreparedRows(rows, errors, chunks)


def _column(batch: pa.Table, name: str, type_: pa.DataType | None = None) -> pa.Array:
    return batch[name] if name in batch.column_names else pa.nulls(batch.num_rows, type_ or pa.string())


def content_hashes(images: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each encoded image's ``CONTENT_HASH`` (null for a null image): equal bytes, equal hash."""
    return pa.array([None if b is None else int.from_bytes(hashlib.sha256(b).digest()[:8], "big", signed=True)
                     for b in images.to_pylist()], CONTENT_HASH.type)


def embedded_table(batch: pa.Table, vectors: np.ndarray, rows: list[int], errors: list[str | None]) -> pa.Table:
    """``batch``'s id and location columns plus a fixed-size ``embedding`` (null where ``errors`` says why) and the
    image's ``content_hash`` (so the image bytes go no further than here).

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
            CONTENT_HASH.name: content_hashes(batch["image"]),
        }
    )


@dataclass(kw_only=True)
class Embed:
    """Frozen-backbone vectors for a batch of samples; undecodable images are marked, not dropped. A stage of the
    executor's kind: ``setup`` loads the model once per worker, ``finish`` runs per batch."""

    backbone: BackboneSpec
    storage: StorageConfig | None = None
    resources: Resources = field(default_factory=Resources)
    batch_size: int = 64
    model: Backbone | None = field(default=None, repr=False)

    def setup(self) -> None:
        if self.model is None:  # placed by the declared resources: GPU workers run bf16 unless dtype is set
            self.model = load_backbone(self.backbone.placed(gpu=self.resources.gpus > 0), self.storage)

    def finish(self, batch: pa.Table, prepared: PreparedRows) -> pa.Table:
        """The forward passes over ``batch``'s prepared samples: ``batch``'s rows with their vectors."""
        vectors = [self.model.forward(chunk) for chunk in prepared.chunks]
        return embedded_table(batch, np.concatenate(vectors) if vectors else
                              np.zeros((0, self.model.embed_dim), np.float32), prepared.rows, prepared.errors)
