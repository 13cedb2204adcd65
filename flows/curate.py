"""The ``curate`` flow: embed the pool and the robot sets (Ray Data, cached), fit the proximity estimator (or a
baseline), score every pool sample, select the top-K and publish a Parquet manifest with its report."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel

from estimator.probe import ProximityEstimator, save_estimator
from flows.params import CurateParams
from flows.runtime import ray_session
from flows.tracking import record_run
from tasks import curate_tasks
from tasks.base import Resources
from tasks.curate_steps import gather_errors
from tasks.embed import Embed
from tasks.report import ReportResult
from tasks.score import entry_rows
from tasks.storage import exists, join, publish_bytes, read_bytes, write_parquet


class CurateReport(BaseModel):
    run_id: str
    run_uri: str
    manifest_uri: str
    pool_samples: int
    selected: int
    per_source: dict[str, dict[str, int]]
    quarantined: dict[str, int]
    shards_embedded: int
    shards_cached: int
    scorer: dict[str, Any]
    seconds: float
    mlflow_run_id: str | None = None
    report_uri: str | None = None
    diversity: dict[str, float] = {}
    mmd2: dict[str, dict[str, float]] = {}


def _error_rate_check(errors_reasons: list[str], usable: int, max_rate: float, errors_uri: str) -> None:
    total = usable + len(errors_reasons)
    rate = len(errors_reasons) / total if total else 1.0
    if rate > max_rate:
        raise RuntimeError(
            f"{len(errors_reasons)} of {total} inputs were quarantined ({rate:.1%} > max_error_rate "
            f"{max_rate:.1%}); see {errors_uri}"
        )


@flow(name="curate", log_prints=True)
def curate(params: CurateParams) -> CurateReport:
    """Curate the pool against the robot data and publish the manifest under OUTPUT_URI/RUN_ID/."""
    start = time.perf_counter()
    run_id = params.run_name or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    run_uri, storage = join(params.output_uri, run_id), params.storage
    if exists(join(run_uri, "_SUCCESS"), storage):  # a finished run is never redone
        print(f"run {run_id} is already complete at {run_uri}")
        return CurateReport.model_validate_json(read_bytes(join(run_uri, "report.json"), storage))
    plan = curate_tasks.preflight(
        pool=params.pool,
        robot=params.robot,
        backbone_spec=params.backbone,
        scorer_config=params.scorer,
        cache_uri=params.resolved_cache_uri(),
        storage=storage,
    )
    print(
        f"run {run_id}: {len(plan.pool)} pool + {len(plan.robot)} robot shards, {len(plan.todo)} to embed "
        f"(backbone {plan.backbone.fingerprint})"
    )

    cached = len(plan.pool) + len(plan.robot) - len(plan.todo)
    embedded = None
    if plan.todo:
        stage = Embed(
            backbone=params.backbone,
            storage=storage,
            batch_size=params.ray.embed_batch_size,
            resources=Resources(cpus=params.ray.actor_cpus, gpus=params.ray.actor_gpus),
        )
        with ray_session(params.ray.address):
            embedded = curate_tasks.embed(
                plan,
                embed_stage=stage,
                storage=storage,
                actors=params.ray.embed_actors,
                read_cpus=params.ray.read_cpus,
                read_batch=params.ray.read_batch_size,
                dtype=params.embedding_dtype,
            )

    errors = gather_errors(plan)
    errors_uri = join(run_uri, "errors.parquet")
    write_parquet(errors, errors_uri, storage)
    reasons = errors["reason"].to_pylist()
    usable = sum(entry_rows(plan.cache, shard) for shard in plan.pool + plan.robot)
    _error_rate_check(reasons, usable, params.max_error_rate, errors_uri)  # before any training
    scorer, metrics = curate_tasks.fit(plan, params.scorer, train_pool_samples=params.train_pool_samples)
    scores = curate_tasks.score_pool(plan, scorer)
    if isinstance(scorer, ProximityEstimator):
        save_estimator(scorer, join(run_uri, "estimator"), storage)
    ranks, chosen, n = curate_tasks.choose(
        scores, k=params.k, fraction=params.fraction, per_source_cap=params.per_source_cap
    )
    sidecar = {
        "run_id": run_id,
        "backbone": params.backbone.model_dump(mode="json"),
        "backbone_fingerprint": plan.backbone.fingerprint,
        "cache_uri": plan.cache.root,
        "embed_dim": plan.backbone.embed_dim,
        "scorer": metrics,
        "estimator_uri": join(run_uri, "estimator") if isinstance(scorer, ProximityEstimator) else None,
        "k": n,
        "pool": [s.model_dump(mode="json") for s in params.pool],
        "robot": [s.model_dump(mode="json") for s in params.robot],
        "errors_uri": errors_uri,
        "quarantined": dict(Counter(reasons)),
    }
    manifest_uri = join(run_uri, "manifest.parquet")
    sidecar = curate_tasks.write_manifest(plan, manifest_uri, scores, ranks, chosen, sidecar)
    analysis = (
        curate_tasks.report(manifest_uri, storage, per_set=params.report_per_set) if params.report_per_set else None
    )
    publish_bytes(join(run_uri, "params.json"), params.model_dump_json(indent=1).encode(), storage)

    report = CurateReport(
        run_id=run_id,
        run_uri=run_uri,
        manifest_uri=manifest_uri,
        pool_samples=sidecar["rows"],
        selected=sidecar["selected"],
        per_source=sidecar["per_source"],
        quarantined=sidecar["quarantined"],
        shards_embedded=embedded.shards_embedded if embedded else 0,
        shards_cached=cached,
        scorer={k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)},
        seconds=round(time.perf_counter() - start, 2),
        report_uri=analysis.html_uri if analysis else None,
        diversity=analysis.metrics["diversity"] if analysis else {},
        mmd2=analysis.metrics["mmd2"] if analysis else {},
    )
    if params.mlflow.enabled:
        report.mlflow_run_id = _record(params, report, sidecar, analysis)
    publish_bytes(join(run_uri, "report.json"), report.model_dump_json(indent=1).encode(), storage)
    publish_bytes(join(run_uri, "_SUCCESS"), b"", storage)  # last: the run is complete
    _publish_artifacts(report)
    return report


def _record(params: CurateParams, report: CurateReport, sidecar: dict, analysis: ReportResult | None) -> str:
    metrics = {
        "pool_samples": report.pool_samples,
        "selected": report.selected,
        "quarantined": sum(report.quarantined.values()),
        "shards_embedded": report.shards_embedded,
        "shards_cached": report.shards_cached,
        "seconds": report.seconds,
        **{f"scorer_{k}": float(v) for k, v in report.scorer.items() if isinstance(v, int | float)},
        **{f"selected_{s}": c["selected"] for s, c in report.per_source.items()},
    }
    flat = {
        "backbone": f"{params.backbone.kind}:{params.backbone.model}",
        "modality": params.backbone.modality,
        "scorer": params.scorer.method,
        "k": sidecar["k"],
        "fraction": params.fraction,
        "pool_sources": ",".join(s.name for s in params.pool),
        "robot_sources": ",".join(s.name for s in params.robot),
        "backbone_fingerprint": sidecar["backbone_fingerprint"],
    }
    metrics |= {f"diversity_{name}": value for name, value in report.diversity.items()}
    files = {
        "manifest.json": json.dumps(sidecar, indent=1).encode(),
        "params.json": params.model_dump_json(indent=1).encode(),
    }
    if analysis is not None:
        uris = {"report/report.html": analysis.html_uri, "report/report_metrics.json": analysis.metrics_uri}
        uris |= {f"report/figures/{name}.png": uri for name, uri in analysis.figure_uris.items()}
        files |= {name: read_bytes(uri, params.storage) for name, uri in uris.items()}
    return record_run(
        params.mlflow,
        run_name=report.run_id,
        params=flat,
        metrics=metrics,
        tags={"manifest_uri": report.manifest_uri, "run_uri": report.run_uri, "kind": "curation"},
        files=files,
    )


def _publish_artifacts(report: CurateReport) -> None:
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
