"""The ``ablation`` flow: does the curation help on this data? Fine-tune a VLA from the base VLM (``none``), from
the VLM mid-trained on a uniform random draw of the pool (``random``), on a draw from the best sources by mean score
(``sources``) and on the manifest's selection (``curated``), each at the same budget and for S seeds — with
``closed_loop``, every VLA is also rolled out in the toy world; every run is an MLflow child run of one parent run,
which holds the result (table, figure, HTML page, verdict). The (arm, seed) units run one after another
here or side by side as Ray tasks (``executor``; ``flows.ablation_units``), with the same result. A finished
ablation is never redone; an interrupted one resumes at its unfinished units."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel

from core.storage import check_writable, exists, publish_bytes
from flows.ablation_params import AblationParams
from flows.ablation_units import absolute_tracking, run_units
from flows.artifacts import mlflow_run_link
from synth.toyworld import TabletopEnv
from tasks.run_folder import RunFolder
from tasks.training_run import check_manifest_uri, check_model, check_robot_sources
from training.ablation import Budget, Plan, heldout_episodes
from training.ablation_report import analyse, markdown_table, rollout_gifs
from training.recording import MLFLOW_RUN
from training.tracking import training_run


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
    storage = params.storage
    check_writable(params.output_uri, storage, setting="output_uri")
    run = RunFolder.open(params.output_uri, params.run_name, storage)
    if run.is_complete():  # a finished ablation is never redone
        run.refuse_other_params(params.result_params())
        print(f"ablation {run.run_id} is already complete at {run.uri}")
        return AblationReport.model_validate(run.read_json("report.json"))
    k = check_manifest_uri(params.manifest_uri, storage)
    check_model(params.model, storage)
    check_robot_sources(params.robot.sources, storage)
    with run.claim():
        report = _run(params, run, k)
    _publish(report)
    return report


def _run(params: AblationParams, run: RunFolder, k: int) -> AblationReport:
    start = time.perf_counter()
    budget = Budget(k=k, midtrain_steps=params.midtrain.steps, finetune_steps=params.finetune.steps,
                    split_seed=params.robot.split_seed, heldout=heldout_episodes(params.robot, params.storage))
    resumed = run.read_json(MLFLOW_RUN)["run_id"] if exists(run.path(MLFLOW_RUN), params.storage) else None
    tags = {"manifest_uri": params.manifest_uri, "lineage.manifest_uri": params.manifest_uri, "run_uri": run.uri,
            "ablation.arms": ",".join(params.arms), "ablation.seeds": str(params.seeds), **budget.tags()}
    with training_run(params.mlflow, run_name=f"ablation-{run.run_id}", kind="ablation", tags=tags,
                      run_id=resumed) as parent:
        if resumed is None:
            run.write_json(MLFLOW_RUN, {"run_id": parent.run_id, "tracking_uri": parent.tracking_uri})
            parent.log_params(params.result_params())
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
                          label=f"ablation {run.run_id}")
        shown_budget = {"K (mid-training samples)": k, "mid-training steps": budget.midtrain_steps,
                        "fine-tuning steps": budget.finetune_steps, "held-out episodes": ", ".join(budget.heldout),
                        "seeds": params.seeds, "evaluation every": params.finetune.eval_every}
        if params.closed_loop:
            shown_budget["closed-loop episodes per unit"] = params.closed_loop.episodes
        result = analyse(units, budget=shown_budget, title=f"Ablation {run.run_id}: {' vs '.join(params.arms)}",
                         level=params.level, rollouts=rollout_gifs(units, params.storage))
        for row in result.arms:
            parent.log_metrics({f"{row['arm']}/{c}": float(v) for c, v in row.items()
                                if c not in ("arm", "seeds")}, step=0)
        html_uri = run.path("ablation.html")
        publish_bytes(html_uri, result.html.encode(), params.storage)
        summary = {"verdict": result.verdict, "arms": result.arms, "pairs": result.pairs, "budget": shown_budget}
        client = parent.client
        client.log_text(parent.run_id, result.html, "ablation/ablation.html")
        client.log_text(parent.run_id, json.dumps(summary, indent=1), "ablation/result.json")
        client.log_text(parent.run_id, _markdown(run.run_id, result.verdict, result.arms, result.pairs),
                        "ablation/summary.md")
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "curves.png").write_bytes(result.png)
            client.log_artifact(parent.run_id, str(Path(tmp, "curves.png")), "ablation")
        parent.set_tags({"ablation.verdict": result.verdict[:5000]})
    report = AblationReport(
        run_id=run.run_id, run_uri=run.uri, html_uri=html_uri, mlflow_run_id=parent.run_id,
        experiment_id=parent.client.get_run(parent.run_id).info.experiment_id, tracking_uri=parent.tracking_uri,
        verdict=result.verdict, arms=result.arms, pairs=result.pairs, budget=shown_budget,
        units=[{"arm": u.arm, "seed": u.seed, "midtrain_run_id": u.midtrain_run_id,
                "finetune_run_id": u.finetune_run_id, "seconds": u.seconds, "closed_loop": u.closed_loop}
               for u in units],
        seconds=round(time.perf_counter() - start, 2))
    run.write_json("params.json", params.result_params())
    run.write_json("report.json", report)
    run.mark_complete()  # last: the ablation is complete
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
