"""The filters' funnel, per source: pool -> after blocklist -> after quality -> after dedup -> selected.

``pool`` is every sample of the source that reached the filters (read and decoded, or removed by one); each later
stage subtracts what that filter removed, counted from the run's quarantine rows (blocklists and the image and
caption thresholds, set aside while reading) and the selection engine's vector filters (CLIP score, probes, dedup).
Samples lost to other faults (undecodable, unreadable shards) are not in the funnel: they are the run's errors.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

STAGES = ("pool", "after_blocklist", "after_quality", "after_dedup", "selected")


def screened_counts(errors: pa.Table, pool_sources: list[str]) -> dict[str, dict[str, int]]:
    """Samples each pool source lost to the read-time filters, by reason (from the run's errors table)."""
    rows = errors.filter(pc.is_in(errors["stage"], pa.array(["blocklist", "quality"])))
    counts: dict[str, Counter] = {}
    for sample_id, reason in zip(rows["sample_id"].to_pylist(), rows["reason"].to_pylist(), strict=True):
        source = (sample_id or "").split("/", 1)[0]
        if source in pool_sources:
            counts.setdefault(source, Counter())[reason] += 1
    return {source: dict(c) for source, c in sorted(counts.items())}


def funnel(per_source: dict[str, dict[str, int]], screened: dict[str, dict[str, int]],
           filtered: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Each source's count after every stage (``STAGES``). ``per_source``: the manifest's pool and selected rows;
    ``screened``/``filtered``: removals by reason at read time / in the selection engine."""
    out = {}
    for source in sorted(set(per_source) | set(screened)):
        removed: Counter = Counter()
        for reason, n in [*screened.get(source, {}).items(), *filtered.get(source, {}).items()]:
            removed[reason.split(":", 1)[0]] += n
        counts = per_source.get(source, {"pool": 0, "selected": 0})
        pool = counts["pool"] + sum(screened.get(source, {}).values())
        after_blocklist = pool - removed["blocklist"]
        after_quality = after_blocklist - removed["quality"]
        out[source] = {"pool": pool, "after_blocklist": after_blocklist, "after_quality": after_quality,
                       "after_dedup": after_quality - removed["dedup"], "selected": counts["selected"]}
    return out


def funnel_total(by_source: dict[str, dict[str, int]]) -> dict[str, int]:
    """The funnel of the whole pool."""
    return {stage: sum(c[stage] for c in by_source.values()) for stage in STAGES}
