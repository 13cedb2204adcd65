"""``emt ablation --demo``: curate the synthetic corpus with the demo's settings (a finished curation is reused),
then run the ``ablation`` flow — none vs random vs curated mid-training — on the tiny VLM, and print the table and
the verdict.

The budget (``DEMO_BUDGET``) was chosen by measuring the seed-to-seed spread on 2 CPU cores; bench/README.md
("Ablation at demo scale") records the measurement, the table, the verdict and the wall time.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.settings import SourceSpec
from core.storage import join
from flows.ablation import AblationReport, ablation
from flows.ablation_params import AblationParams
from flows.curate import curate
from flows.demo import DEFAULT_LOCAL_ROOT, demo_curate_params, demo_mlflow
from synth import SynthConfig
from training.ablation_report import markdown_table
from training.vlm import save_tiny_vlm

DEMO_BUDGET = {
    "seeds": 3,
    "midtrain": {"steps": 60, "lr": 3e-3, "batch_size": 8, "log_every": 10, "shuffle_buffer": 64},
    "finetune": {"steps": 150, "lr": 3e-3, "batch_size": 8, "log_every": 10, "shuffle_buffer": 64,
                 "eval_every": 25},
}


TOYWORLD_ROOT = "data/demo-toyworld"
TOYWORLD_EXTRA = {"arms": ["none", "random", "sources", "curated"], "closed_loop": {"episodes": 20}}


def run_ablation_demo(*, root: str | None = None, synth: SynthConfig | None = None, run_name: str = "demo",
                      budget: dict | None = None, executor: str = "local", toyworld: bool = False,
                      without: Sequence[str] = ()) -> AblationReport:
    """Curate the synthetic corpus (reused when done), then the ablation at ``budget`` (default the demo's),
    its units here or, with ``executor`` ray, on a local Ray; prints and returns the report. ``toyworld``: on
    the toy world's corpus (``emt synth --toyworld``), with the sources arm and closed-loop rollouts.
    ``without``: pool sources left out of the pool (the control: with the source that carries what the robot
    tasks need removed, the same code should find no clear difference); its runs are named after them."""
    synth = synth or SynthConfig(toyworld=toyworld)
    root = root or (TOYWORLD_ROOT if toyworld else DEFAULT_LOCAL_ROOT)
    curate_params, info = demo_curate_params(root, None, synth, 0.1, filters=False)  # arms of the pool as generated
    suffix = "".join(f"-without-{name}" for name in without)
    if without:
        curate_params = curate_params.model_copy(update={"pool": _pool_without(curate_params.pool, without)})
    # the ablation reads only the manifest: no curation report (its MMD / map take minutes on 2 cores)
    curated = curate(curate_params.model_copy(update={"run_name": f"ablation-demo-curation{suffix}",
                                                      "report_per_set": 0}))
    vlm = save_tiny_vlm(join(root, "models", "tiny-vlm"), None, seed=0)
    params = AblationParams.model_validate({
        "model": vlm, "manifest_uri": curated.manifest_uri, "output_uri": join(root, "ablation"),
        "run_name": run_name + suffix, "robot": {"sources": info.robot, "heldout_fraction": 0.25},
        "head": {"hidden_dim": 64}, "mlflow": demo_mlflow("emt-ablation"), "executor": executor,
        **(budget or DEMO_BUDGET),
        **({"arms": TOYWORLD_EXTRA["arms"], "closed_loop": {**TOYWORLD_EXTRA["closed_loop"],
                                                            "image_size": synth.image_size}} if toyworld else {})})
    report = ablation(params)
    print_ablation(report)
    return report


def _pool_without(pool: list[SourceSpec], without: Sequence[str]) -> list[SourceSpec]:
    """``pool`` less the sources named in ``without``; a name not in the pool, or none left, is an error."""
    names = [source.name for source in pool]
    if unknown := sorted(set(without) - set(names)):
        raise ValueError(f"--without: no pool source named {', '.join(unknown)} (the pool has {', '.join(names)})")
    kept = [source for source in pool if source.name not in without]
    if not kept:
        raise ValueError("--without: that leaves no pool source")
    return kept


def print_ablation(report: AblationReport) -> None:
    print(f"\nablation {report.run_id} (MLflow parent run {report.mlflow_run_id}), {report.seconds:.0f} s")
    print(markdown_table(report.arms))
    print()
    print(markdown_table(report.pairs))
    print(f"\n{report.verdict}\n\npage: {report.html_uri}")
