"""The ``ablation`` flow: does the curation help on this data? Fine-tune a VLA from the base VLM (``none``), from
the VLM mid-trained on a uniform random draw of the pool (``random``), on a draw from the best sources by mean score
(``sources``) and on the manifest's selection (``curated``), each at the same budget and for S seeds — with
``closed_loop``, every VLA is also rolled out in the toy world; every run is an MLflow child run of one parent run,
which holds the result (table, figure, HTML page, verdict). The (arm, seed) units run one after another
here or side by side as Ray tasks (``executor``; ``flows.ablation_units``), with the same result. A finished
ablation is never redone; an interrupted one resumes at its unfinished units."""

from __future__ import annotations

import json

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel

from core.storage import publish_bytes
from flows.ablation_params import AblationParams
from flows.ablation_units import absolute_tracking, run_units
from flows.artifacts import mlflow_run_link
from flows.run import Run
from synth.toyworld import TabletopEnv
from tasks.training_run import check_manifest_uri, check_model, check_robot_sources
from training.ablation import Budget, Plan, heldout_episodes
from training.ablation_report import analyse, markdown_table, rollout_gifs
from training.recording import log_files


class AblationReport(BaseModel):
    """What the flow returns (and stores as ``report.json``)."""

    run_id: str
    run_uri: str
    html_uri: str
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    verdict: str
    arms: list[dict]
    pairs: list[dict]
    budget: dict
    units: list[dict]
    seconds: float


@flow(name="ablation", log_prints=True)
def ablation(params: AblationParams) -> AblationReport:
    """Run every (arm, seed) unit (here or on Ray, per ``executor``), then publish the comparison."""
    run = Run(params, AblationReport, stored_params=params.result_params(), label="ablation")
    return run.execute(lambda: _run(params, run), publish=_publish)


def _run(params: AblationParams, run: Run[AblationReport]) -> AblationReport:
    k = check_manifest_uri(params.manifest)
    check_model(params.model, params.storage)
    check_robot_sources(params.robot.sources, params.storage)
    budget = Budget(k=k, midtrain_steps=params.midtrain.steps, finetune_steps=params.finetune.steps,
                    split_seed=params.robot.split_seed, heldout=heldout_episodes(params.robot, params.storage))
    tags = {"manifest_uri": params.manifest_uri, "lineage.manifest_uri": params.manifest_uri, "run_uri": run.uri,
            "ablation.arms": ",".join(params.arms), "ablation.seeds": str(params.seeds), **budget.tags()}
    with run.tracked(params.mlflow, kind="ablation", tags=tags, name=f"ablation-{run.id}",
                     params=params.result_params()) as parent:
        # the units log to the parent's store by an absolute URI: a Ray worker may run in another directory
        tracking = params.mlflow.model_copy(update={"tracking_uri": absolute_tracking(parent.tracking_uri)})
        plan = Plan(model=params.model, manifest_uri=params.manifest_uri, robot=params.robot, head=params.head,
                    data=params.data, midtrain_train=params.midtrain, finetune_train=params.finetune,
                    eval_batches=params.eval_batches, mlflow=tracking, parent_run_id=parent.run_id,
                    root_uri=run.uri, storage=params.storage, threads=params.unit_cpus,
                    top_sources=params.top_sources, closed_loop=params.closed_loop,
                    world=TabletopEnv if params.closed_loop else None)
        # seed-major: an interrupted sequential ablation has whole seeds done
        pending = [(arm, seed) for seed in range(params.seeds) for arm in params.arms]
        units = run_units(plan, pending, budget, executor=params.executor, address=params.ray_address,
                          cpus=params.unit_cpus, gpus=params.unit_gpus, max_parallel=params.max_parallel_units,
                          label=f"ablation {run.id}")
        shown_budget = {"K (mid-training samples)": k, "mid-training steps": budget.midtrain_steps,
                        "fine-tuning steps": budget.finetune_steps, "held-out episodes": ", ".join(budget.heldout),
                        "seeds": params.seeds, "evaluation every": params.finetune.eval_every}
        if params.closed_loop:
            shown_budget["closed-loop episodes per unit"] = params.closed_loop.episodes
        result = analyse(units, budget=shown_budget, title=f"Ablation {run.id}: {' vs '.join(params.arms)}",
                         level=params.level, rollouts=rollout_gifs(units, params.storage))
        for row in result.arms:
            parent.log_metrics({f"{row['arm']}/{c}": float(v) for c, v in row.items()
                                if c not in ("arm", "seeds")}, step=0)
        html_uri = run.path("ablation.html")
        publish_bytes(html_uri, result.html.encode(), params.storage)
        summary = {"verdict": result.verdict, "arms": result.arms, "pairs": result.pairs, "budget": shown_budget}
        log_files(parent, {"ablation/ablation.html": result.html.encode(),
                           "ablation/result.json": json.dumps(summary, indent=1).encode(),
                           "ablation/summary.md": _markdown(run.id, result.verdict, result.arms, result.pairs).encode(),
                           "ablation/curves.png": result.png})
        parent.set_tags({"ablation.verdict": result.verdict[:5000]})
    report = AblationReport(
        run_id=run.id, run_uri=run.uri, html_uri=html_uri, mlflow_run_id=parent.run_id,
        experiment_id=parent.client.get_run(parent.run_id).info.experiment_id, tracking_uri=parent.tracking_uri,
        verdict=result.verdict, arms=result.arms, pairs=result.pairs, budget=shown_budget,
        units=[{"arm": u.arm, "seed": u.seed, "midtrain_run_id": u.midtrain_run_id,
                "finetune_run_id": u.finetune_run_id, "seconds": u.seconds, "closed_loop": u.closed_loop}
               for u in units],
        seconds=run.seconds())
    return report


def _markdown(run_id: str, verdict: str, arms: list[dict], pairs: list[dict]) -> str:
    return "\n\n".join([f"# Ablation `{run_id}`", f"**{verdict}**", "## Arms", markdown_table(arms),
                        "## Pairwise differences (paired by seed)", markdown_table(pairs)])


def _publish(report: AblationReport) -> None:
    create_table_artifact(key="ablation-arms", table=report.arms, description=f"Arms of ablation {report.run_id}")
    link = mlflow_run_link(report.tracking_uri, report.experiment_id, report.mlflow_run_id)
    create_markdown_artifact(
        key="ablation-summary",
        markdown=_markdown(report.run_id, report.verdict, report.arms, report.pairs)
        + f"\n\nMLflow parent run {link}; page `{report.html_uri}`.",
    )
