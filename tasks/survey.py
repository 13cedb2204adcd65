"""Read a source end to end and count what is in it: the demo's summary and the reader benchmark's unit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow.compute as pc

from core.read import ImageCheck, Quarantine, list_shards_or_quarantine, read_shard
from core.settings import SourceSpec


@dataclass
class SourceSurvey:
    source: str
    format: str
    shards: int = 0
    samples: int = 0
    image_bytes: int = 0
    seconds: float = 0.0
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def survey_source(
    spec: SourceSpec,
    *,
    quarantine: Quarantine | None = None,
    batch_size: int = 256,
    image_check: ImageCheck = "header",
) -> SourceSurvey:
    """Stream every sample of ``spec`` once (bounded memory) and count samples, bytes and quarantined input."""
    quarantine = quarantine if quarantine is not None else Quarantine()
    before = dict(quarantine.counts)
    survey = SourceSurvey(source=spec.name, format=spec.format)
    start = time.perf_counter()
    shards = list_shards_or_quarantine(spec, quarantine)
    survey.shards = len(shards)
    for shard in shards:
        for table in read_shard(
            spec,
            shard,
            quarantine=quarantine,
            batch_size=batch_size,
            image_check=image_check,
        ):
            survey.samples += table.num_rows
            survey.image_bytes += pc.sum(pc.binary_length(table["image"])).as_py() or 0
    survey.seconds = time.perf_counter() - start
    survey.quarantined = {k: v - before.get(k, 0) for k, v in quarantine.counts.items() if v > before.get(k, 0)}
    return survey
