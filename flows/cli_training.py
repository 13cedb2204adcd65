"""The training commands of ``emt``: ``emt midtrain|finetune|pipeline --config FILE``. Each validates its YAML
(a bad field is one line naming it) before the training stack is imported, runs its flow with a progress line
per logged step, and ends with the MLflow run ids (and, for a VLA, the run tree and held-out evaluation)."""

from __future__ import annotations

import argparse
from typing import Any

from core.settings import load_config
from flows.cli_options import on_ray

_HELP = {
    "midtrain": "mid-train a VLM on the samples a curation manifest selects (MLflow run)",
    "finetune": "fine-tune a VLM into a VLA on robot episodes, evaluated on held-out episodes (MLflow run)",
    "pipeline": "curate -> midtrain -> finetune in one flow, one run id through all three",
}


def _cmd_train(args: argparse.Namespace) -> int:
    from flows import training_params

    model = {
        "midtrain": training_params.MidtrainParams,
        "finetune": training_params.FinetuneParams,
        "pipeline": training_params.PipelineParams,
    }[args.command]
    params = load_config(model, args.config)  # before the heavy imports below
    from flows import input_checks

    # Model, manifest and robot data read now: a bad one is one line before Prefect and Ray start.
    {"midtrain": input_checks.check_midtrain, "finetune": input_checks.check_finetune,
     "pipeline": input_checks.check_pipeline}[args.command](params)
    return on_ray(args, lambda: _train(args.command, params))


def _train(command: str, params: Any) -> int:
    from flows.demo_training import print_evaluation, print_run_tree

    if command == "pipeline":
        from flows.pipeline import pipeline

        report = pipeline(params)
        print(f"\nmanifest: {report.curate.manifest_uri}\nMLflow runs: {report.mlflow_run_ids}")
        trained = [report.midtrain, report.finetune]
    else:
        from flows.finetune import finetune
        from flows.midtrain import midtrain

        tuned = (midtrain if command == "midtrain" else finetune)(params)
        print(f"\n{tuned.kind} run {tuned.run_id}: model {tuned.model_uri} "
              f"({tuned.registered_model} v{tuned.model_version}), MLflow run {tuned.mlflow_run_id}")
        trained = [tuned]
    for run in trained:
        skipped = {k.removeprefix("skipped/"): int(v) for k, v in run.metrics.items() if k.startswith("skipped/")}
        if skipped:  # e.g. a manifest older than its data, or non-finite actions in the robot data
            print(f"{run.kind} skipped samples: {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))} "
                  f"(counted in every epoch; in {run.run_uri}/report.json)")
    tuned = trained[-1]
    print_run_tree(tuned.mlflow_run_id, tuned.tracking_uri)
    if tuned.kind == "finetune":
        print_evaluation(tuned)
    return 0


def add_training_commands(sub: argparse._SubParsersAction) -> None:
    for name, help_text in _HELP.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help=f"YAML of the parameters (deploy/{name}.example.yaml)")
        p.set_defaults(run=_cmd_train)
