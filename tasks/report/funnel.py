"""The report's "Filters" section: the funnel per source (pool -> after blocklist -> after quality -> after dedup ->
selected) and a few examples of what the quality and dedup filters removed. A blocklisted sample is never shown,
read or named here: only rows of the ``quality`` and ``dedup`` stages are looked up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from core.contracts import ERRORS, LOCATION
from core.settings import SourceSpec, StorageConfig
from core.storage import arrow_filesystem, exists
from tasks.funnel import STAGES, funnel_total

SHOWN_STAGES = ("quality", "dedup")  # never "blocklist"
PER_REASON = 2  # examples of each removal reason


def _errors(uri: str | None, storage: StorageConfig | None) -> pa.Table:
    if not uri or not exists(uri, storage):
        return ERRORS.empty_table()
    fs, path = arrow_filesystem(uri, storage)
    return pads.dataset(path, filesystem=fs, format="parquet", schema=ERRORS).to_table()


def removal_rows(sidecar: dict[str, Any], storage: StorageConfig | None, per_reason: int = PER_REASON) -> pa.Table:
    """Up to ``per_reason`` removed samples of each quality and dedup reason (lowest sample ids first), as rows a
    shard's samples are read back by (no locations: the shard is read whole and filtered)."""
    errors = pa.concat_tables([_errors(sidecar.get("errors_uri"), storage),
                               _errors(sidecar.get("removed_uri"), storage)])
    errors = errors.filter(pc.and_(pc.is_in(errors["stage"], pa.array(SHOWN_STAGES)),
                                   pc.is_valid(errors["sample_id"])))
    picked = []
    for reason in sorted(set(errors["reason"].to_pylist())):
        rows = errors.filter(pc.equal(errors["reason"], reason)).sort_by("sample_id")
        picked.append(rows.slice(0, per_reason))
    rows = pa.concat_tables([ERRORS.empty_table(), *picked])
    n = rows.num_rows
    sources = [s.split("/", 1)[0] for s in rows["sample_id"].to_pylist()]
    return pa.table({"sample_id": rows["sample_id"], "source": pa.array(sources, pa.string()),
                     "shard_uri": rows["shard_uri"], "reason": rows["reason"],
                     "score": pa.array([0.0] * n, pa.float32()), "rank": pa.array([-1] * n, pa.int64()),
                     **{f.name: pa.nulls(n, f.type) for f in LOCATION}})


def filters_section(
    sidecar: dict[str, Any], storage: StorageConfig | None, pool: dict[str, SourceSpec], *,
    examples: Callable[[pa.Table, dict[str, SourceSpec]], list[tuple[bytes, str, float, str]]],
    thumbnails: Callable[[list[tuple[bytes, str, float, str]], str], bytes], show: bool,
) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """The funnel table (a row per source and one for the whole pool) and, with ``show``, a thumbnail grid of
    removed samples captioned with their reason."""
    by_source = sidecar.get("funnel") or {}
    df = pd.DataFrame({**by_source, **({"(all)": funnel_total(by_source)} if by_source else {})}, index=list(STAGES)).T
    pngs: dict[str, bytes] = {}
    if show and by_source:
        rows, labelled = removal_rows(sidecar, storage), []
        for reason in sorted(set(rows["reason"].to_pylist())):
            part = rows.filter(pc.equal(rows["reason"], reason)).drop_columns(["reason"])
            labelled += [(img, f"[{reason}] {text}", score, source)
                         for img, text, score, source in examples(part, pool)]
        if labelled:
            pngs["filtered_examples"] = thumbnails(labelled, "Removed by the quality and dedup filters")
    return df, pngs
