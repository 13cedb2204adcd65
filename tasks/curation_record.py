"""What a curation run records about itself: the manifest's sidecar, the typed summary (``CurateReport``) and the
MLflow run (parameters flattened, metrics, the report as artifacts, the manifest URI as a tag)."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from core.settings import MlflowConfig, SourceSpec, StorageConfig
from core.storage import read_bytes
from estimator.backbones.spec import BackboneSpec
from training.recording import record_run

if TYPE_CHECKING:  # annotations only: scoring imports torch, the report matplotlib; recording needs neither
    from tasks.report import ReportResult
    from tasks.score import CachedShard


class CurateReport(BaseModel):
    """The summary a curation run returns (and stores as ``report.json``)."""

    run_id: str
    run_uri: str
    manifest_uri: str
    pool_samples: int
    selected: int
    per_source: dict[str, dict[str, int]]
    quarantined: dict[str, int]
    selection: dict[str, Any] = {}  # mode, seed (importance), dedup_threshold, duplicates_skipped
    shards_embedded: int
    shards_cached: int
    scorer: dict[str, Any]
    seconds: float
    mlflow_run_id: str | None = None
    report_uri: str | None = None
    diversity: dict[str, float] = {}
    mmd2: dict[str, dict[str, float]] = {}
    embedding: dict[str, float] = {}  # this run's embedding job: samples/s, seconds per stage (empty: all cached)
    timings: dict[str, float] = {}  # wall seconds per step: embed_s, fit_s, score_s, select_s, manifest_s, report_s
    funnel: dict[str, dict[str, int]] = {}  # per source: pool, after_blocklist, after_quality, after_dedup, selected
    filtered: dict[str, dict[str, int]] = {}  # per source: removals by the vector filters (CLIP score, probes, dedup)
    dedup_unhashed: int = 0  # samples dedup compared without a content hash (cached before hashes): semantic only


def cache_entries(pool: list[CachedShard], robot: list[CachedShard]) -> dict[str, Any]:
    """Where the run's embeddings are, as its plan found them: pool entries by shard URI, robot entries by source.
    The report reads these and never lists the sources again (a shard quarantined at preflight has no entry, and a
    source may have changed since the run)."""
    by_source: dict[str, list[str]] = {}
    for shard in robot:
        by_source.setdefault(shard.source, []).append(shard.entry.uri)
    return {"pool": {shard.shard_uri: shard.entry.uri for shard in pool}, "robot": by_source}


def build_sidecar(
    *,
    run_id: str,
    backbone: BackboneSpec,
    fingerprint: str,
    embed_dim: int,
    cache_uri: str,
    cache_entries: dict[str, Any],
    scorer_metrics: dict[str, Any],
    estimator_uri: str | None,
    k: int,
    selection: dict[str, Any] | None = None,
    pool: list[SourceSpec],
    robot: list[SourceSpec],
    errors_uri: str,
    reasons: list[str],
    embedding: dict[str, float] | None = None,
    filters: dict[str, Any] | None = None,
    screened: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """The manifest's sidecar before the writer adds counts and the content hash (``filters``: what the run
    filtered with; ``screened``: samples per pool source the read-time filters removed, by reason)."""
    return {
        "run_id": run_id,
        "backbone": backbone.model_dump(mode="json"),
        "backbone_fingerprint": fingerprint,
        "cache_uri": cache_uri,
        "cache_entries": cache_entries,
        "embed_dim": embed_dim,
        "scorer": scorer_metrics,
        "estimator_uri": estimator_uri,
        "k": k,
        "selection": selection or {"mode": "top_k", "seed": None, "dedup_threshold": None, "duplicates_skipped": 0},
        "pool": [s.model_dump(mode="json") for s in pool],
        "robot": [s.model_dump(mode="json") for s in robot],
        "errors_uri": errors_uri,
        "quarantined": dict(Counter(reasons)),
        "embedding": embedding or {},
        "filters": filters or {},
        "screened": screened or {},
    }


def mlflow_metrics(report: CurateReport) -> dict[str, float]:
    """The run's numbers as flat MLflow metrics."""
    metrics: dict[str, float] = {
        "pool_samples": report.pool_samples,
        "selected": report.selected,
        "quarantined": sum(report.quarantined.values()),
        "shards_embedded": report.shards_embedded,
        "shards_cached": report.shards_cached,
        "duplicates_skipped": report.selection.get("duplicates_skipped", 0),
        "seconds": report.seconds,
        **{f"scorer_{k}": float(v) for k, v in report.scorer.items() if isinstance(v, int | float)},
        **{f"selected_{s}": c["selected"] for s, c in report.per_source.items()},
    }
    metrics |= {f"embed_{name}": float(value) for name, value in report.embedding.items()}
    metrics |= {f"timing_{step}": seconds for step, seconds in report.timings.items()}
    metrics |= {f"funnel_{source}_{stage}": n for source, c in report.funnel.items() for stage, n in c.items()}
    removed: Counter = Counter()
    for counts in report.filtered.values():
        removed.update(counts)
    metrics |= {f"removed_{reason.replace(':', '_')}": n for reason, n in removed.items()}  # MLflow names have no ':'
    metrics["dedup_unhashed"] = report.dedup_unhashed
    return metrics | {f"diversity_{name}": value for name, value in report.diversity.items()}


def mlflow_params(*, backbone: BackboneSpec, scorer: str, fraction: float | None, sidecar: dict[str, Any]) -> dict:
    """The settings a reader of the MLflow UI compares runs by, flattened to strings and numbers."""
    return {
        "backbone": f"{backbone.kind}:{backbone.model}",
        "modality": backbone.modality,
        "scorer": scorer,
        "k": sidecar["k"],
        "fraction": fraction,
        "selection_mode": sidecar.get("selection", {}).get("mode", "top_k"),
        "selection_seed": sidecar.get("selection", {}).get("seed"),
        "dedup_threshold": sidecar.get("selection", {}).get("dedup_threshold"),
        "pool_sources": ",".join(s["name"] for s in sidecar["pool"]),
        "robot_sources": ",".join(s["name"] for s in sidecar["robot"]),
        "backbone_fingerprint": sidecar["backbone_fingerprint"],
    }


def record_curation(
    config: MlflowConfig,
    *,
    report: CurateReport,
    params: dict[str, Any],
    params_json: str,
    sidecar: dict[str, Any],
    analysis: ReportResult | None,
    storage: StorageConfig | None,
    started_at: float | None = None,
) -> str:
    """Log a finished curation run to MLflow, its start at ``started_at`` (epoch seconds; None = now) so its
    duration is the run's; returns the MLflow run id."""
    files = {"manifest.json": json.dumps(sidecar, indent=1).encode(), "params.json": params_json.encode()}
    if analysis is not None:
        uris = {"report/report.html": analysis.html_uri, "report/report_metrics.json": analysis.metrics_uri}
        uris |= {f"report/figures/{name}.png": uri for name, uri in analysis.figure_uris.items()}
        files |= {name: read_bytes(uri, storage) for name, uri in uris.items()}
    return record_run(
        config,
        run_name=report.run_id,
        params=params,
        metrics=mlflow_metrics(report),
        tags={"manifest_uri": report.manifest_uri, "run_uri": report.run_uri, "kind": "curation"},
        files=files,
        start_time=started_at,
    )
