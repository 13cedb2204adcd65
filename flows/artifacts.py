"""Prefect artifacts a curation run publishes: the selection table and a markdown summary (shown in the UI)."""

from __future__ import annotations

import json

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.curation_record import CurateReport


def publish_curation_artifacts(report: CurateReport) -> None:
    """The ``curation-selection`` table and the ``curation-summary`` markdown of a finished run."""
    rows = [
        {
            "source": s,
            "pool": c["pool"],
            "selected": c["selected"],
            "share_selected": round(c["selected"] / c["pool"], 3) if c["pool"] else 0.0,
        }
        for s, c in sorted(report.per_source.items())
    ]
    create_table_artifact(key="curation-selection", table=rows, description=f"Selection of run {report.run_id}")
    quarantine = ", ".join(f"{k}: {v}" for k, v in sorted(report.quarantined.items())) or "none"
    create_markdown_artifact(
        key="curation-summary",
        markdown="\n".join(
            [
                f"# Curation run `{report.run_id}`",
                f"- manifest: `{report.manifest_uri}`",
                f"- selected {report.selected} of {report.pool_samples} pool samples",
                f"- scorer: {json.dumps(report.scorer)}",
                f"- shards embedded {report.shards_embedded}, from cache {report.shards_cached}",
                f"- quarantined: {quarantine}",
                "",
                "| source | pool | selected |",
                "|---|---|---|",
                *[f"| {r['source']} | {r['pool']} | {r['selected']} |" for r in rows],
                *_analysis_markdown(report),
            ]
        ),
    )


def _analysis_markdown(report: CurateReport) -> list[str]:
    """The report's key tables (diversity, squared MMD) and where the full HTML report is."""
    if not report.report_uri:
        return []
    names = list(report.mmd2)
    return [
        "",
        f"Full report (figures, 2-D map, examples): `{report.report_uri}`",
        "",
        "| set | diversity |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in report.diversity.items()],
        "",
        "Squared MMD (RBF kernel, median-heuristic bandwidth, unbiased)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        *[f"| {a} | " + " | ".join(f"{report.mmd2[a][b]:.4f}" for b in names) + " |" for a in names],
    ]
