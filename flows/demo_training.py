"""The whole demo: the ``pipeline`` flow on embedded defaults with tiny models — curate the synthetic pool, mid-train
a tiny VLM on the selection, fine-tune it into a VLA on the synthetic robot sets, evaluate on held-out episodes —
then print the MLflow run tree (read back from MLflow, lineage tags included) and the evaluation."""

from __future__ import annotations

from core.storage import join
from flows.demo import DEFAULT_LOCAL_ROOT, DEMO_BUCKET, demo_curate_params, demo_mlflow, demo_storage, print_report
from flows.pipeline import PipelineReport, pipeline
from flows.training_params import PipelineParams
from synth import SynthConfig
from tasks.training_run import TrainingReport
from training.recording import lineage
from training.vlm import save_tiny_vlm

# A few dozen steps, a minute or two on 2 cores. Tiny random-initialised models need a larger step than the
# paper's 5e-5 (meant for pretrained VLMs) for the loss to move within them.
DEMO_TRAIN = {"steps": 30, "lr": 1e-3, "batch_size": 8, "log_every": 5, "shuffle_buffer": 64}


def print_run_tree(finetune_run_id: str, tracking_uri: str) -> list[dict]:
    """The lineage of a VLA as MLflow has it: from the curation run (and its manifest) down to the VLA's run."""
    chain = lineage(finetune_run_id, tracking_uri)
    print(f"\nMLflow run tree ({tracking_uri}):")
    for depth, run in enumerate(reversed(chain)):
        pad = "   " * depth + ("└─ " if depth else "")
        model = f"  model {run['model']}" if run["model"] else ""
        print(f"{pad}{run['kind']:<9} run {run['run_id']}  ({run['run_name']}, {run['status']}){model}")
        inner = "   " * depth + ("   " if depth else "") + "   "
        if run["kind"] == "curation":
            print(f"{inner}manifest {run['manifest_uri']}")
        for d in run["datasets"]:
            print(f"{inner}input {d['name']}: {d['source']} (digest {d['digest']})")
        for key, value in run["lineage"].items():
            print(f"{inner}{key} = {value}")
    return chain


def print_evaluation(report: TrainingReport) -> None:
    """The VLA's last held-out evaluation: action L1 per arm dimension (dataset units) and gripper accuracy."""
    metrics = report.eval_metrics()
    if not metrics:
        print("\nno held-out episode, so no evaluation")
        return
    print(f"\nheld-out evaluation of {report.registered_model} v{report.model_version} (step {report.steps}):")
    for name, value in sorted(metrics.items()):
        print(f"  {name:<18} {value:.4f}")


def run_pipeline_demo(
    *, root: str | None, s3: bool, synth: SynthConfig, k_fraction: float = 0.1, train: dict | None = None
) -> PipelineReport:
    with demo_storage(s3) as storage:
        root = root or (f"s3://{DEMO_BUCKET}/demo" if s3 else DEFAULT_LOCAL_ROOT)
        curate_params, info = demo_curate_params(root, storage, synth, k_fraction)
        vlm = save_tiny_vlm(join(root, "models", "tiny-vlm"), storage, seed=0)
        train = train or DEMO_TRAIN
        mlflow = demo_mlflow("emt-training")
        params = PipelineParams(
            curate=curate_params,
            midtrain={"model": vlm, "output_uri": join(root, "midtrain"), "train": train, "mlflow": mlflow},
            finetune={
                "output_uri": join(root, "finetune"),
                "robot": {"sources": info.robot, "heldout_fraction": 0.25},
                "head": {"hidden_dim": 64},
                "train": {**train, "eval_every": max(train["steps"] // 3, 1)},
                "mlflow": mlflow,
            },
        )
        report = pipeline(params)
        print_report(report.curate, storage, info.ground_truth_uri)
        for trained in (report.midtrain, report.finetune):
            print(f"\n{trained.kind}: {trained.steps} steps, final loss {trained.final_loss:.4f}, "
                  f"model {trained.model_uri}")
        print_run_tree(report.finetune.mlflow_run_id, report.finetune.tracking_uri)
        print_evaluation(report.finetune)
        return report
