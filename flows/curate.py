"""The ``curate`` flow: embed the pool and the robot sets (Ray Data, cached), fit the proximity estimator (or a
baseline), then score, rank and select the pool and publish its Parquet manifest with one job of Ray tasks (the
selection engine, ``tasks/distributed_select.py``), and the run's report.

The flow only orchestrates: each step is a task of ``tasks/prefect_tasks.py``, the run's lifecycle (lease, a
finished run's stored report, ``_SUCCESS``) is ``flows.run.Run`` and what the run records about itself is in
``tasks/curation_record.py``.
"""

from __future__ import annotations

import os

from prefect import flow

from core.location import Location
from core.storage import write_parquet
from estimator.probe import ProximityEstimator, save_estimator
from estimator.threads import cpu_threads
from flows.artifacts import publish_curation_artifacts
from flows.params import CurateParams
from flows.run import Run
from flows.run_progress import CurationProgress
from flows.runtime import ray_session
from tasks import prefect_tasks
from tasks.curation import counted, gather_errors, usable_rows
from tasks.curation_record import CurateReport, build_sidecar, cache_entries, mlflow_params, record_curation
from tasks.distributed_select import DistributedSelection
from tasks.embed import Embed
from tasks.executor import Resources, StepTimes, recording
from tasks.filters.screen import ScreenPlan
from tasks.funnel import screened_counts
from tasks.sample_counts import check_error_rate, check_k_fits, count_errors, known_pool_size
from tasks.select import resolve_k

__all__ = ["CurateReport", "curate"]


def selects_in_process(params: CurateParams, *, pool_shards: int) -> bool:
    """Whether the selection job runs in this process: a local run (no Ray address) whose pool is one manifest file,
    so one scoring unit, where starting and stopping a local Ray costs more than the job (measured: ~4.5 s of a
    ~14 s re-run from the cache). The manifest is the same either way."""
    local = params.ray.address is None and not os.environ.get("RAY_ADDRESS")
    return local and pool_shards <= params.ray.shards_per_manifest_file


@flow(name="curate", log_prints=True)
def curate(params: CurateParams) -> CurateReport:
    """Curate the pool against the robot data and publish the manifest under OUTPUT_URI/RUN_ID/."""
    # the cache is checked writable with the output, before any work, not after the embedding
    run = Run(params, CurateReport, writable={"cache_uri": params.cache.uri})

    def steps() -> CurateReport:
        with recording() as times:  # every step's wall time, in the report and MLflow
            return _curate(params, run, times)

    return run.execute(steps, publish=lambda report: publish_curation_artifacts(report, params.mlflow.resolved_uri()))


def _curate(params: CurateParams, run: Run[CurateReport], times: StepTimes) -> CurateReport:
    storage = params.storage
    progress = CurationProgress(run.id)  # the bar and the step log lines on the run's page in the UI
    screen = ScreenPlan.load(params.filters.blocklists, params.filters.quality, storage)  # lists read once, here
    plan = prefect_tasks.preflight_task(
        pool=params.pool,
        robot=params.robot,
        backbone_spec=params.backbone,
        scorer_config=params.scorer,
        cache_at=params.cache,
        storage=storage,
        allow_empty_sources=params.allow_empty_sources,
        actor_gpus=params.ray.actor_gpus,  # the workers' placement names the dtype, not this machine's GPU
        screen=screen,
        quality=params.filters.quality,
        dedup=params.filters.dedup,
    )
    print(
        f"run {run.id}: {len(plan.pool)} pool + {len(plan.robot)} robot shards, {len(plan.todo)} to embed "
        f"(backbone {plan.backbone.fingerprint})"
    )
    known = known_pool_size(plan.pool, plan.todo, storage)
    check_k_fits(known, k=params.k, fraction=params.fraction)  # before embedding, when the pool's size is known

    cached = len(plan.pool) + len(plan.robot) - len(plan.todo)
    embedded = None
    if plan.todo:
        stage = Embed(
            backbone=params.backbone,
            storage=storage,
            batch_size=params.ray.embed_batch_size,
            resources=Resources(gpus=params.ray.actor_gpus),  # its CPUs: the job's, from params.ray
        )
        with ray_session(params.ray.address), progress.following_embedding(len(plan.todo)):
            embedded = prefect_tasks.embed_task(
                plan,
                embed_stage=stage,
                config=params.ray,
                dtype=params.embedding_dtype,
            )
    embedding = embedded.stats() if embedded else {}
    # datatrove's habit: what each shard's worker counted, beside the run (a cached shard has no row)
    run.folder.write_json("stats.json", {"embedding": embedding, "shards_cached": cached,
                                  "shards": embedded.shards.to_pylist() if embedded else []})

    plan = counted(plan, embedded)  # what the workers reported: no entry is read again in the driver
    errors = gather_errors(plan)
    errors_uri = run.path("errors.parquet")
    write_parquet(errors, errors_uri, storage)
    reasons = errors["reason"].to_pylist()
    usable = usable_rows(plan)
    source_of = {shard.shard_uri: shard.source for shard in plan.pool + plan.robot}
    # Before any training: too much input lost, or a K the pool cannot meet, stops the run here.
    check_error_rate(count_errors(errors, usable, source_of, storage), params.max_error_rate, errors_uri)
    check_k_fits(sum(usable[s.shard_uri] for s in plan.pool), k=params.k, fraction=params.fraction)
    progress.step("fit")
    with times.step("fit"), cpu_threads(params.step_cpus):
        scorer, metrics = prefect_tasks.fit_task(plan, params.scorer, train_pool_samples=params.train_pool_samples)
    estimator_uri = None
    if isinstance(scorer, ProximityEstimator):
        estimator_uri = run.path("estimator")
        save_estimator(scorer, Location(estimator_uri, storage))
    pool_rows = sum(usable[s.shard_uri] for s in plan.pool)
    sidecar = build_sidecar(
        run_id=run.id,
        backbone=params.backbone,
        fingerprint=plan.backbone.fingerprint,
        embed_dim=plan.backbone.embed_dim,
        cache_uri=plan.cache.root.uri,
        cache_entries=cache_entries(plan.pool, plan.robot),
        scorer_metrics=metrics,
        estimator_uri=estimator_uri,
        k=resolve_k(pool_rows, k=params.k, fraction=params.fraction),
        selection=params.selection.record(),
        pool=params.pool,
        robot=params.robot,
        errors_uri=errors_uri,
        reasons=reasons,
        embedding=embedding,
        filters=params.filters.record(screen),
        screened=screened_counts(errors, [s.name for s in params.pool]),
    )
    manifest_uri = run.path("manifest.parquet")
    progress.step("score")  # score, rank, select and write the manifest: one job of Ray tasks
    in_process = selects_in_process(params, pool_shards=len(plan.pool))
    options = DistributedSelection(shards_per_file=params.ray.shards_per_manifest_file,
                                   workers=params.ray.selection_workers, in_process=in_process)
    with cpu_threads(params.step_cpus) if in_process else ray_session(params.ray.address):
        sidecar = prefect_tasks.score_select_write_task(
            plan, scorer, manifest_uri, sidecar, k=params.k, fraction=params.fraction, selection=params.selection,
            per_source_cap=params.per_source_cap, options=options,
        )
    if sidecar.get("dedup_unhashed"):
        print(f"dedup: {sidecar['dedup_unhashed']} samples come from cache entries written before content hashes "
              "were kept: they got semantic dedup only (delete those entries to have them hashed)")
    progress.step("report")
    with times.step("report"), cpu_threads(params.step_cpus):
        analysis = (
            prefect_tasks.report_task(manifest_uri, storage, per_set=params.report_per_set,
                                      on_step=progress.report_step)
            if params.report_per_set
            else None
        )

    report = CurateReport(
        run_id=run.id,
        run_uri=run.uri,
        manifest_uri=manifest_uri,
        pool_samples=sidecar["rows"],
        selected=sidecar["selected"],
        per_source=sidecar["per_source"],
        quarantined=sidecar["quarantined"],
        selection=sidecar["selection"],
        shards_embedded=embedded.shards_embedded if embedded else 0,
        shards_cached=cached,
        scorer={k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)},
        seconds=run.seconds(),
        report_uri=analysis.html_uri if analysis else None,
        diversity=analysis.metrics["diversity"] if analysis else {},
        mmd2=analysis.metrics["mmd2"] if analysis else {},
        embedding=embedding,
        timings=times.record(),
        funnel=sidecar["funnel"],
        filtered=sidecar["filtered"],
        dedup_unhashed=sidecar.get("dedup_unhashed", 0),
    )
    if params.mlflow.enabled:
        progress.step("mlflow")
        report.mlflow_run_id = record_curation(
            params.mlflow,
            report=report,
            params=mlflow_params(
                backbone=params.backbone, scorer=params.scorer.method, fraction=params.fraction, sidecar=sidecar
            ),
            params_json=params.model_dump_json(indent=1),
            sidecar=sidecar,
            analysis=analysis,
            storage=storage,
            started_at=run.started_at,
        )
    progress.step("done", report.manifest_uri)
    return report
