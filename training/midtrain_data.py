"""Mid-training samples: the rows a curation manifest selects, streamed back from their shards as chat
conversations (see ``training.chat``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from core.location import Location
from core.settings import StorageConfig
from training.chat import ChatEncoder, decode_image, split_qa
from training.config import ChatDataConfig
from training.mixing import MixedSource
from training.sources import Quarantine, iter_selected, read_manifest, read_sidecar
from training.stream import BatchStream, Position, Skipped, SkipSample


def check_manifest(manifest: str | Location, storage: StorageConfig | None = None) -> int:
    """The number of selected rows; a ValueError naming the manifest if there is none to train on."""
    where = Location.of(manifest, storage)
    if not where.exists():
        raise ValueError(f"manifest_uri {where.uri!r}: no such manifest")
    try:
        read_sidecar(where)
    except FileNotFoundError:
        raise ValueError(f"manifest_uri {where.uri!r}: the manifest has no sidecar JSON") from None
    selected = read_manifest(where, selected_only=True).num_rows
    if selected == 0:
        raise ValueError(f"manifest_uri {where.uri!r}: the manifest selects no rows")
    return selected


class ManifestSource:
    """``source(epoch)`` for BatchStream: the selected samples (id, image bytes, text) in manifest order, and
    a ``Skipped`` item for every sample the reader set aside."""

    def __init__(self, manifest_uri: str, storage: StorageConfig | None = None, *,
                 rows: pa.Table | None = None) -> None:
        self.manifest_uri, self.storage, self.rows = manifest_uri, storage, rows  # rows: instead of the selected

    def __call__(self, epoch: int) -> Iterator[Any]:
        quarantine = Quarantine(stage="midtrain")
        seen = 0
        for table in iter_selected(self.manifest_uri, self.storage, batch_size=64, quarantine=quarantine,
                                   rows=self.rows):
            for row in quarantine.rows[seen:]:
                yield Skipped(row["reason"])
            seen = len(quarantine.rows)
            yield from zip(table["sample_id"].to_pylist(), table["image"].to_pylist(), table["text"].to_pylist(),
                           strict=True)
        for row in quarantine.rows[seen:]:
            yield Skipped(row["reason"])


class ChatSamples:
    """``encode`` for BatchStream: a raw (id, image, text) row as a labelled conversation."""

    def __init__(self, encoder: ChatEncoder, config: ChatDataConfig) -> None:
        self.encoder, self.config = encoder, config

    def __call__(self, item: Any) -> dict:
        if isinstance(item, Skipped):
            raise SkipSample(item.reason)
        _, image, text = item
        if not text or not text.strip():
            raise SkipSample("no_text")
        question, answer = split_qa(text)
        user = question if question is not None else self.config.caption_instruction
        return self.encoder.conversation(decode_image(image), user, answer)


def midtrain_stream(
    manifest_uri: str,
    encoder: ChatEncoder,
    config: ChatDataConfig,
    *,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    storage: StorageConfig | None = None,
    rank: int = 0,
    world_size: int = 1,
    start: Position = (0, 0),
    general: tuple[str, pa.Table] | None = None,
) -> BatchStream:
    """Endless shuffled batches of labelled conversations from a manifest's selected samples, with the
    ``general`` (manifest URI, rows) mixed in at ``config.mix.ratio`` (``training.mixing``)."""
    source: Any = ManifestSource(manifest_uri, storage)
    if general is not None and config.mix is not None:
        source = MixedSource(source, ManifestSource(general[0], storage, rows=general[1]), ratio=config.mix.ratio,
                             seed=seed)
    return BatchStream(source=source, encode=ChatSamples(encoder, config),
                       collate=encoder.collate, batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=seed,
                       rank=rank, world_size=world_size, start=start)
