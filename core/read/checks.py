"""What every reader shares: the quarantine for bad input, image, text and robot-value checks, and row batching.

Bad input is quarantined with a reason, never changed silently: a caption that is not a string
(``malformed_text``), not UTF-8 (``non_utf8_text``), holds a NUL byte (``nul_in_text``) or is longer than
``MAX_TEXT_CHARS`` (``text_too_long``); a robot action or state that is not numeric (``malformed_action`` /
``malformed_state``) or holds NaN/inf (``non_finite_action`` / ``non_finite_state``).
"""

from __future__ import annotations

import io
import math
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
from PIL import Image

from core.contracts import ERRORS, SAMPLE, table_from_rows
from core.settings import SourceSpec, StorageConfig

ImageCheck = Literal["none", "header", "full"]

# Captions past this many characters are quarantined: backbones read a few hundred tokens, and a megabyte "caption"
# is a scraping accident, not text to learn from.
MAX_TEXT_CHARS = 16_384


@dataclass
class Quarantine:
    """Collects bad input as rows of the errors contract and counts them by reason. Nothing is dropped
    without a row here."""

    stage: str = "read"
    rows: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, *, shard_uri: str, reason: str, detail: str = "", sample_id: str | None = None,
            stage: str | None = None) -> None:
        self.rows.append(
            {
                "sample_id": sample_id,
                "shard_uri": shard_uri,
                "stage": stage or self.stage,
                "reason": reason,
                "detail": detail[:500],
            }
        )
        self.counts[reason] += 1

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        return table_from_rows(self.rows, ERRORS)


@dataclass(frozen=True)
class Reading:
    """One source being read, and how: what every format's reader takes, passed whole rather than as keywords.
    ``root``: the directory shard names are taken relative to (so sample ids do not depend on where data lives)."""

    spec: SourceSpec
    root: str
    quarantine: Quarantine
    batch_size: int = 256
    image_check: ImageCheck = "header"

    @property
    def storage(self) -> StorageConfig | None:
        return self.spec.storage


def image_problem(data: bytes | None, check: ImageCheck) -> str | None:
    """Why ``data`` is not a usable encoded image (``None`` when it is).

    ``header`` parses the header and verifies the structure (cheap); ``full`` decodes every pixel, which also
    catches truncated files; ``none`` only checks that bytes are present.
    """
    if not data:
        return "missing_image"
    if check == "none":
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if check == "full":
                    img.load()
                else:
                    img.verify()
    except Exception:  # Pillow raises many types for bad bytes; the reason is what matters here
        return "undecodable_image"
    return None


class SampleBatcher:
    """Accumulates sample rows and hands them out as sample-contract tables of ``batch_size`` rows."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._rows: list[dict] = []

    def add(self, row: dict) -> pa.Table | None:
        self._rows.append(row)
        return self.flush() if len(self._rows) >= self.batch_size else None

    def flush(self) -> pa.Table | None:
        if not self._rows:
            return None
        table, self._rows = table_from_rows(self._rows, SAMPLE), []
        return table


def text_problem(text: object) -> str | None:
    """Why ``text`` is not a usable caption or instruction (``None`` when it is)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return "missing_text"
    if not isinstance(text, str):
        return "malformed_text"
    if "\x00" in text:
        return "nul_in_text"
    return "text_too_long" if len(text) > MAX_TEXT_CHARS else None


def values_problem(name: str, values: object) -> str | None:
    """Why a robot ``action``/``state`` vector is unusable: not numbers, or NaN/inf (``None`` when fine)."""
    if values is None:
        return None
    if not isinstance(values, list | tuple) or not all(isinstance(v, int | float) for v in values):
        return f"malformed_{name}"
    return None if all(math.isfinite(v) for v in values) else f"non_finite_{name}"


def accept_sample(row: dict, quarantine: Quarantine, check: ImageCheck) -> bool:
    """Check one candidate sample; quarantine it with a reason if unusable. A reader may have set ``problem``
    already (a fault only it can see, such as a duplicate key or undecodable text)."""
    problem = (
        row.get("problem")
        or image_problem(row.get("image"), check)
        or text_problem(row.get("text"))
        or values_problem("action", row.get("action"))
        or values_problem("state", row.get("state"))
    )
    if problem is not None:
        quarantine.add(shard_uri=row["shard_uri"], reason=problem, sample_id=row["sample_id"])
        return False
    return True


def batched(rows: Iterator[dict], quarantine: Quarantine, check: ImageCheck, batch_size: int) -> Iterator[pa.Table]:
    """Check each candidate row and yield accepted ones as sample tables of at most ``batch_size`` rows."""
    batcher = SampleBatcher(batch_size)
    for row in rows:
        if accept_sample(row, quarantine, check) and (table := batcher.add(row)) is not None:
            yield table
    if (table := batcher.flush()) is not None:
        yield table
