"""Prefect artifacts the runs publish: tables and markdown summaries (shown in the UI) of curation and training."""

from __future__ import annotations

import json

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.curation_record import CurateReport
from tasks.training_run import TrainingReport


def publish_curation_artifacts(report: CurateReport, tracking_uri: str | None = None) -> None:
    """The ``curation-selection`` table and the ``curation-summary`` markdown of a finished run (linking its MLflow
    run, when ``tracking_uri`` tracked it, and its report)."""
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
                *_mlflow_markdown(report, tracking_uri),
                f"- selected {report.selected} of {report.pool_samples} pool samples",
                f"- scorer: {json.dumps(report.scorer)}",
                *_shortcut_markdown(report),
                f"- shards embedded {report.shards_embedded}, from cache {report.shards_cached}",
                f"- quarantined: {quarantine}",
                "",
                "| source | pool | selected |",
                "|---|---|---|",
                *[f"| {r['source']} | {r['pool']} | {r['selected']} |" for r in rows],
                *_funnel_markdown(report),
                *_analysis_markdown(report, tracking_uri),
            ]
        ),
    )


def _funnel_markdown(report: CurateReport) -> list[str]:
    """Samples per source after each filter (blocklist, quality, dedup) and the selection."""
    if not report.funnel:
        return []
    stages = ("pool", "after_blocklist", "after_quality", "after_dedup", "selected")
    return ["", "Filters: samples after each stage", "", "| source | " + " | ".join(stages) + " |",
            "|---" * (len(stages) + 1) + "|",
            *[f"| {s} | " + " | ".join(str(c[k]) for k in stages) + " |" for s, c in sorted(report.funnel.items())]]


def _shortcut_markdown(report: CurateReport) -> list[str]:
    """The modality-shortcut diagnostic: probe accuracies per feature part beside the estimator's, and its note
    (a warning, with what to change, when the text alone separates robot from pool and the scorer reads it)."""
    s = report.scorer
    if "shortcut_note" not in s:
        return []
    probes = ", ".join(f"{p} {s[f'probe_{p}_val_accuracy']:.3f}" for p in ("image", "text")
                       if f"probe_{p}_val_accuracy" in s)
    estimator = f", estimator {s['val_accuracy']:.3f}" if "val_accuracy" in s else ""
    head = f"- shortcut diagnostic (validation accuracy: {probes}{estimator}; scorer reads {s.get('features')}):"
    return [head, f"  **{s['shortcut_note']}**" if s.get("shortcut") else f"  {s['shortcut_note']}"]


def _mlflow_markdown(report: CurateReport, tracking_uri: str | None) -> list[str]:
    """The run's MLflow link; the report is among that run's artifacts (report/report.html)."""
    if not (tracking_uri and report.mlflow_run_id):
        return []
    return [f"- MLflow run: {curation_run_link(report, tracking_uri)} (its artifacts hold report/report.html)"]


def curation_run_link(report: CurateReport, tracking_uri: str | None) -> str:
    """The curation's MLflow run as a link (its id where it was not tracked)."""
    if not (tracking_uri and report.mlflow_run_id):
        return f"`{report.mlflow_run_id}`" if report.mlflow_run_id else "not tracked"
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(tracking_uri).get_run(report.mlflow_run_id).info.experiment_id
    return mlflow_run_link(tracking_uri, experiment_id, report.mlflow_run_id)


def report_link(report: CurateReport, tracking_uri: str | None) -> str:
    """The run's HTML report: opened from the MLflow server when one tracked the run (it serves the artifact as a
    page), else where it was written."""
    if not report.report_uri:
        return "none (report_per_set: 0)"
    if tracking_uri and tracking_uri.startswith(("http://", "https://")) and report.mlflow_run_id:
        page = f"{tracking_uri.rstrip('/')}/get-artifact?path=report/report.html&run_uuid={report.mlflow_run_id}"
        return f"[report.html]({page}) (also `{report.report_uri}`)"
    return f"`{report.report_uri}`"


def _analysis_markdown(report: CurateReport, tracking_uri: str | None) -> list[str]:
    """The report's key tables (diversity, squared MMD) and where the full HTML report is."""
    if not report.report_uri:
        return []
    names = list(report.mmd2)
    return [
        "",
        f"Full report (figures, 2-D map, examples): {report_link(report, tracking_uri)}",
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


def mlflow_run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI (a tracking server), or how to open it (a local SQLite store)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"[{run_id}]({tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}` (open with `mlflow ui --backend-store-uri {tracking_uri}`)"


def publish_training_artifacts(report: TrainingReport) -> None:
    """The ``<kind>-summary`` markdown (link to the MLflow run, model version, lineage) and the ``<kind>-metrics``
    table of the final numbers (for fine-tuning, the held-out evaluation among them)."""
    rows = [{"metric": k, "value": round(v, 6)} for k, v in sorted(report.metrics.items())]
    create_table_artifact(key=f"{report.kind}-metrics", table=rows, description=f"Final metrics of {report.run_id}")
    create_markdown_artifact(
        key=f"{report.kind}-summary",
        markdown="\n".join(
            [
                f"# {report.kind} run `{report.run_id}`",
                f"- MLflow run: {mlflow_run_link(report.tracking_uri, report.experiment_id, report.mlflow_run_id)}",
                f"- registered model: `{report.registered_model}` version {report.model_version}",
                f"- model: `{report.model_uri}`; last checkpoint: `{report.checkpoint_uri}`",
                f"- upstream MLflow run (lineage): `{report.parent_run_id or 'none'}`",
                f"- {report.steps} steps, final loss {report.final_loss:.4f}, {report.seconds:.0f} s",
                "",
                "| metric | value |",
                "|---|---|",
                *[f"| {r['metric']} | {r['value']} |" for r in rows],
            ]
        ),
    )
