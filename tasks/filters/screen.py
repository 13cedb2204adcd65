"""The per-sample filters run on a shard's read batches before the backbone sees them: blocklists first (a listed
sample's bytes go no further), then the image and caption thresholds. Each removed sample becomes a quarantine row
(``blocklist:NAME`` or ``quality:...``) beside the reader's own, so it is counted per source like other bad input.
A row records the list's name or the threshold only, never the content."""

from __future__ import annotations

import io
import json

import pyarrow as pa
from PIL import Image

from core.read import Quarantine
from tasks.filters.blocklist import Blocklists
from tasks.filters.quality import QualityConfig, caption_reason, image_reason, image_stats


def _url(meta: str | None) -> str | None:
    """The sample's source URL when its metadata carries one (``url`` in the JSON, as img2dataset writes it)."""
    if not meta:
        return None
    try:
        value = json.loads(meta)
    except ValueError:
        return None
    url = value.get("url") if isinstance(value, dict) else None
    return url if isinstance(url, str) else None


class Screen:
    """The configured blocklists and quality thresholds, applied row by row to a batch of the SAMPLE contract."""

    def __init__(self, blocklists: Blocklists, quality: QualityConfig) -> None:
        self.blocklists = blocklists
        self.quality = quality

    def reason(self, image: bytes, text: str, meta: str | None) -> str | None:
        """Why this sample leaves the pool, or None: the first list it is on, else the first threshold it fails."""
        if (match := self.blocklists.match(image, _url(meta))) is not None:
            return match.reason
        if self.quality.reads_pixels:
            try:
                with Image.open(io.BytesIO(image)) as decoded:
                    if reason := image_reason(image_stats(decoded), self.quality):
                        return reason
            except (OSError, ValueError):
                return None  # the reader has already checked the image decodes; nothing to judge here
        return caption_reason(text, self.quality)

    def apply(self, table: pa.Table, quarantine: Quarantine) -> pa.Table:
        """``table`` without the samples that fail, each of those added to ``quarantine`` with its reason."""
        keep = []
        for sample_id, shard_uri, image, text, meta in zip(
            *(table[c].to_pylist() for c in ("sample_id", "shard_uri", "image", "text", "meta")), strict=True
        ):
            reason = self.reason(image, text, meta)
            if reason is not None:
                quarantine.add(shard_uri=shard_uri, reason=reason, sample_id=sample_id)
            keep.append(reason is None)
        return table.filter(pa.array(keep, pa.bool_())) if not all(keep) else table
