"""How many samples a run has, has lost and may still select — counted in samples, never in rows of the errors table.

A quarantined sample counts one. A shard lost whole (unreadable, wrong schema, cut short) counts the samples it
held: its Parquet footer's row count when the footer is readable, else an estimate — the mean size of the
source's intact shards (of all intact shards if the source has none) — which the error message states.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.settings import StorageConfig
from core.storage import arrow_filesystem
from tasks import select as selection
from tasks.embed_shards import ShardJob
from tasks.score import CachedShard

SOURCE_REASONS = ("unreadable_source", "no_shards")  # rows about a whole source, set at listing
FILTER_STAGES = ("blocklist", "quality", "dedup")  # removed by the run's filters on purpose: not bad input


class ErrorRateExceeded(ValueError):
    """More input was quarantined or lost than ``max_error_rate`` allows."""


def footer_rows(shard_uri: str, storage: StorageConfig | None) -> int | None:
    """Rows of a Parquet shard from its footer alone (``None`` if it is not Parquet or the footer is unreadable)."""
    if not shard_uri.endswith(".parquet"):
        return None
    fs, path = arrow_filesystem(shard_uri, storage)
    try:
        return pq.ParquetFile(path, filesystem=fs).metadata.num_rows
    except (pa.ArrowInvalid, FileNotFoundError):
        return None


def known_pool_size(pool: list[CachedShard], todo: list[ShardJob], storage: StorageConfig | None) -> int | None:
    """The most samples the pool can yield, known before embedding (cached entries' counts, the footers of the
    Parquet shards still to embed), or ``None`` when a shard's size cannot be known without reading it (a tar)."""
    pending = {j.shard_uri for j in todo}
    total = 0
    for shard in pool:
        rows = footer_rows(shard.shard_uri, storage) if shard.shard_uri in pending or not shard.counts \
            else shard.counts.rows
        if rows is None:
            return None
        total += rows
    return total


def check_k_fits(pool_size: int | None, *, k: int | None, fraction: float | None) -> None:
    """Refuse a K larger than the pool as soon as the pool's size is known (``ValueError``)."""
    if pool_size is not None and k is not None:
        selection.resolve_k(pool_size, k=k, fraction=fraction)


@dataclass(frozen=True)
class ErrorCount:
    usable: int  # samples that reached the cache
    quarantined: int  # samples set aside one by one
    lost: int  # samples of shards lost whole
    estimated: int  # of ``lost``, how many are an estimate (the shard's size was unknowable)

    @property
    def total(self) -> int:
        return self.usable + self.quarantined + self.lost

    @property
    def bad(self) -> int:
        return self.quarantined + self.lost


def count_errors(
    errors: pa.Table, usable: dict[str, int], source_of: dict[str, str], storage: StorageConfig | None
) -> ErrorCount:
    """Count ``errors`` in samples. ``usable`` maps every planned shard to its cached rows, ``source_of`` to its
    source. A row with a ``sample_id`` is one sample; a row without is a shard (or source) lost whole; a row of a
    filter's stage (``FILTER_STAGES``) is not counted."""
    per_sample = errors.filter(pc.invert(pc.is_null(errors["sample_id"])))
    seen = Counter(usable) + Counter(per_sample["shard_uri"].to_pylist())
    filtered = pc.is_in(per_sample["stage"], pa.array(FILTER_STAGES)).to_numpy(zero_copy_only=False)
    shard_rows = errors.filter(pc.is_null(errors["sample_id"]))
    # A source that listed nothing (allowed empty) held no sample of this run; only lost shards count.
    shard_rows = shard_rows.filter(pc.invert(pc.is_in(shard_rows["reason"], pa.array(SOURCE_REASONS))))
    whole = set(shard_rows["shard_uri"].to_pylist())
    intact = {s: n for s, n in seen.items() if s not in whole}
    by_source: dict[str, list[int]] = {}
    for shard, n in intact.items():
        by_source.setdefault(source_of.get(shard, ""), []).append(n)
    overall = sum(intact.values()) / len(intact) if intact else 1.0
    lost = estimated = 0
    for shard in whole:
        size = footer_rows(shard, storage)
        if size is None:
            sizes = by_source.get(source_of.get(shard, ""))
            size = round(sum(sizes) / len(sizes)) if sizes else round(overall)
            estimated += max(size - seen[shard], 1)
        lost += max(size - seen[shard], 1)  # a shard lost whole counts at least one sample
    # a filtered sample was read fine and removed on purpose: it is neither usable nor lost to the error rate
    return ErrorCount(usable=sum(usable.values()), quarantined=per_sample.num_rows - int(filtered.sum()), lost=lost,
                      estimated=estimated)


def _distinct(rate: float, limit: float) -> tuple[str, str]:
    """``rate`` and ``limit`` as percentages with just enough digits to tell them apart."""
    for digits in range(1, 12):
        a, b = f"{rate:.{digits}%}", f"{limit:.{digits}%}"
        if a != b:
            return a, b
    return f"{rate!r}", f"{limit!r}"


def check_error_rate(count: ErrorCount, max_rate: float, errors_uri: str) -> None:
    """Raise ``ErrorRateExceeded`` (one line) when more than ``max_rate`` of the input samples were lost."""
    rate = count.bad / count.total if count.total else 1.0
    if rate <= max_rate:
        return
    shown, limit = _distinct(rate, max_rate)
    estimate = f", {count.estimated} of them estimated from the mean shard size" if count.estimated else ""
    raise ErrorRateExceeded(
        f"{count.bad} of {count.total} input samples were quarantined ({count.quarantined}) or lost with their "
        f"shard ({count.lost}{estimate}): {shown} > max_error_rate {limit}; see {errors_uri}"
    )
