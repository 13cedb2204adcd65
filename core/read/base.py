"""What every reader shares: the quarantine for bad input, image checks and row batching."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
from PIL import Image

from core.contracts import ERRORS, SAMPLE, table_from_rows

ImageCheck = Literal["none", "header", "full"]


@dataclass
class Quarantine:
    """Collects bad input as rows of the errors contract and counts them by reason. Nothing is dropped
    without a row here."""

    stage: str = "read"
    rows: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, *, shard_uri: str, reason: str, detail: str = "", sample_id: str | None = None) -> None:
        self.rows.append(
            {
                "sample_id": sample_id,
                "shard_uri": shard_uri,
                "stage": self.stage,
                "reason": reason,
                "detail": detail[:500],
            }
        )
        self.counts[reason] += 1

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        return table_from_rows(self.rows, ERRORS)


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


def accept_sample(row: dict, quarantine: Quarantine, check: ImageCheck) -> bool:
    """Check one candidate sample; quarantine it with a reason if unusable."""
    problem = image_problem(row.get("image"), check)
    if problem is None and not (row.get("text") or "").strip():
        problem = "missing_text"
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
