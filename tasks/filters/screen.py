"""The per-sample filters run on a shard's read batches before the backbone sees them: blocklists first (a listed
sample's bytes go no further), then the image and caption thresholds. Each removed sample becomes a quarantine row
(``blocklist:NAME`` or ``quality:...``) beside the reader's own, so it is counted per source like other bad input.
A row records the list's name or the threshold only, never the content."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import pyarrow as pa
from PIL import Image

from core.read import Quarantine
from core.settings import StorageConfig
from tasks.filters.blocklist import Blocklists, BlocklistSpec, read_list
from tasks.filters.quality import QualityConfig, caption_reason, image_reason, image_stats

# The thresholds judged on a read batch; the others (CLIP score, probes) read cached vectors, so changing them
# never embeds again.
BATCH_THRESHOLDS = ("min_side", "max_aspect", "min_sharpness", "min_caption_chars", "max_caption_chars",
                    "min_letter_share")


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
                quarantine.add(shard_uri=shard_uri, reason=reason, sample_id=sample_id, stage=reason.split(":")[0])
            keep.append(reason is None)
        return table.filter(pa.array(keep, pa.bool_())) if not all(keep) else table


@dataclass(frozen=True)
class ScreenPlan:
    """The screen a run applies, read once on the driver and shipped to the embedding workers as parsed entries, so
    every worker screens with exactly the lists the cache key was made from."""

    lists: tuple[tuple[BlocklistSpec, tuple[str, ...]], ...]
    quality: QualityConfig

    @classmethod
    def load(cls, specs: list[BlocklistSpec], quality: QualityConfig,
             storage: StorageConfig | None = None) -> ScreenPlan | None:
        """Every list read and checked (``ValueError`` naming a missing or malformed one); None when no list and
        no batch threshold is set, so a run without filters keys and embeds exactly as before."""
        lists = [(spec, tuple(read_list(spec, storage))) for spec in specs]
        plan = cls(tuple(lists), quality)
        return plan if lists or any(plan.thresholds().values()) else None

    def thresholds(self) -> dict:
        return {name: getattr(self.quality, name) for name in BATCH_THRESHOLDS}

    def key(self) -> str:
        """What the screen changes in a cache entry: each list's name, kind, distance and a hash of its entries,
        and the batch thresholds."""
        lists = [[spec.name, spec.kind, spec.max_distance if spec.kind == "phash" else None,
                  hashlib.sha256("\n".join(entries).encode()).hexdigest()] for spec, entries in self.lists]
        raw = json.dumps({"blocklists": lists, "quality": self.thresholds()}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def build(self) -> Screen:
        """The screen itself (perceptual-hash indexes built here: once per worker)."""
        return Screen(Blocklists([(spec, list(entries)) for spec, entries in self.lists]), self.quality)
