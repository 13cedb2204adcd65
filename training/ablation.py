"""Does the curation help? The arms of the ablation and one (arm, seed) unit of it, as plain code: the flow
(``flows.ablation``) only orders the units and publishes the result (``training.ablation_stats``).

Arms, all at one budget — the same K mid-training samples, the same mid-training steps, the same fine-tuning
steps and the same held-out episodes (one ``robot.split_seed`` for every run):

- ``none``: fine-tune the base VLM directly;
- ``random``: mid-train on K pool samples drawn uniformly without replacement (seeded by the unit's seed, so the
  spread across seeds covers the luck of the draw too), then fine-tune;
- ``curated``: mid-train on the manifest's selected K, then fine-tune;
- ``sources``: mid-train on K samples drawn uniformly from the best ``top_sources`` pool sources by mean score
  (source-level selection, as the 2026 "Rethinking VLM representation" study did), then fine-tune — so a user
  learns whether selecting samples beats selecting sources on their data.

The unit's seed seeds both trainings (head initialisation, data order), so arm A and arm B at seed s differ only
by their mid-training: the statistics pair runs by seed. A unit trains with a fixed number of CPU threads
(``Plan.threads``), because a float sum split over another number of threads rounds differently: so a unit gives
the same numbers in the flow's process as in a Ray worker.

A random or sources arm reads its samples through a derived manifest — the curated manifest's rows (every pool
sample is in it) with ``selected`` replaced by the draw, and its own sidecar — so every mid-trained arm takes the
same data path.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from core.manifest import read_manifest, read_sidecar, write_manifest
from core.settings import MlflowConfig, StorageConfig
from core.storage import exists, join, publish_bytes, read_bytes
from estimator.threads import cpu_threads
from training.closed_loop import GIF, WorldFactory, closed_loop_eval, log_closed_loop_artifacts
from training.config import (
    ChatDataConfig,
    ClosedLoopConfig,
    FinetuneConfig,
    MidtrainConfig,
    RobotDataConfig,
    TrainConfig,
    VLAHeadConfig,
)
from training.metrics import MemoryTracker
from training.recipes import finetune, midtrain
from training.recording import MLFLOW_PARENT
from training.robot_data import RobotEpisodes
from training.tracking import PARENT, MlflowTracker, log_manifest_input, log_robot_inputs, training_run

Arm = Literal["none", "random", "sources", "curated"]
ARMS: tuple[Arm, ...] = ("none", "random", "sources", "curated")
CURVE_METRICS = ("loss", "l1/arm", "gripper_accuracy")  # held-out metrics kept per evaluation step


def uniform_draw(n: int, k: int, *, seed: int) -> np.ndarray:
    """A mask of ``k`` of ``n`` rows drawn uniformly without replacement (every k-subset equally likely)."""
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return chosen


def _write_derived(manifest_uri: str, out_uri: str, table: pa.Table, chosen: np.ndarray, extra: dict[str, Any],
                   storage: StorageConfig | None) -> str:
    """Write ``out_uri``: the manifest's rows (``table``) with ``selected`` replaced by ``chosen``, and a sidecar
    naming the derivation."""
    drawn = table.set_column(table.schema.get_field_index("selected"), "selected", pa.array(chosen))
    sidecar = read_sidecar(manifest_uri, storage)
    keep = {k_: v for k_, v in sidecar.items() if k_ not in ("rows", "selected", "per_source", "content_sha256")}
    write_manifest(out_uri, [drawn], {**keep, **extra, "derived_from": manifest_uri}, storage)
    return out_uri


def _selected_count(table: pa.Table) -> int:
    return int(np.count_nonzero(table["selected"].to_numpy(zero_copy_only=False)))


def random_manifest(manifest_uri: str, out_uri: str, *, seed: int, storage: StorageConfig | None = None) -> str:
    """Write ``out_uri``: the manifest's rows with ``selected`` replaced by a uniform draw (without replacement,
    ``numpy.random.default_rng(seed)``) of as many rows as the manifest selects; its sidecar names the draw."""
    table = read_manifest(manifest_uri, storage)
    chosen = uniform_draw(table.num_rows, _selected_count(table), seed=seed)
    return _write_derived(manifest_uri, out_uri, table, chosen, {"selection": "random", "draw_seed": seed}, storage)


def best_sources(table: pa.Table, top: int) -> list[str]:
    """The ``top`` sources of a manifest with the highest mean score (ties by name)."""
    means = table.group_by("source").aggregate([("score", "mean")]).to_pylist()
    return [r["source"] for r in sorted(means, key=lambda r: (-r["score_mean"], r["source"]))[:top]]


def sources_manifest(manifest_uri: str, out_uri: str, *, top: int, seed: int,
                     storage: StorageConfig | None = None) -> str:
    """Write ``out_uri``: as many rows as the manifest selects, drawn uniformly (seeded) from the rows of its best
    ``top`` sources by mean score (all of them when they hold fewer); its sidecar names the sources."""
    table = read_manifest(manifest_uri, storage)
    names = best_sources(table, top)
    rows = np.flatnonzero(np.isin(table["source"].to_numpy(zero_copy_only=False), names))
    chosen = np.zeros(table.num_rows, dtype=bool)
    chosen[rows[uniform_draw(len(rows), min(_selected_count(table), len(rows)), seed=seed)]] = True
    extra = {"selection": "sources", "draw_seed": seed, "sources": names}
    return _write_derived(manifest_uri, out_uri, table, chosen, extra, storage)


@dataclass(frozen=True)
class Budget:
    """What every arm shares. ``k`` = the manifest's selected count; ``heldout`` = the held-out episodes."""

    k: int
    midtrain_steps: int
    finetune_steps: int
    split_seed: int
    heldout: list[str]

    def tags(self) -> dict[str, str]:
        return {"ablation.k": str(self.k), "ablation.midtrain_steps": str(self.midtrain_steps),
                "ablation.finetune_steps": str(self.finetune_steps), "ablation.split_seed": str(self.split_seed),
                "ablation.heldout_episodes": json.dumps(self.heldout)}


def heldout_episodes(robot: RobotDataConfig, storage: StorageConfig | None) -> list[str]:
    """The held-out episodes as ``source/episode`` names: what every arm is evaluated on."""
    return sorted(f"{name}/{ep}" for name, ep in RobotEpisodes(robot, storage).heldout)


@dataclass
class Plan:
    """An ablation's settings, resolved: where the unit writes, what it trains, where it is tracked."""

    model: str
    manifest_uri: str
    robot: RobotDataConfig
    head: VLAHeadConfig
    data: ChatDataConfig
    midtrain_train: TrainConfig
    finetune_train: TrainConfig
    eval_batches: int | None
    mlflow: MlflowConfig
    parent_run_id: str
    root_uri: str
    storage: StorageConfig = field(default_factory=StorageConfig)
    threads: int | None = None  # CPU threads of each unit's training; None = the process's setting
    top_sources: int = 2  # the sources arm's best sources by mean score
    closed_loop: ClosedLoopConfig | None = None  # roll each fine-tuned VLA out in ``world`` (both or neither)
    world: WorldFactory | None = None


@dataclass
class UnitResult:
    """One (arm, seed): the held-out curves ``{metric: [(step, value), ...]}``, its MLflow runs and, when rolled
    out, its closed-loop ``{"successes", "episodes", "rate"}`` and where its rollouts' GIF is."""

    arm: str
    seed: int
    curves: dict[str, list[tuple[int, float]]]
    midtrain_run_id: str | None
    finetune_run_id: str
    midtrain_samples: int
    seconds: float
    closed_loop: dict[str, float] | None = None
    rollouts_uri: str | None = None


class _Recorder:
    """Forward to the MLflow tracker and keep the evaluation metrics (the curves) in memory."""

    def __init__(self, inner: MlflowTracker) -> None:
        self.inner, self.memory = inner, MemoryTracker()

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.inner.log_metrics(metrics, step)
        self.memory.log_metrics(metrics, step)


def _child(plan: Plan, *, arm: str, seed: int, kind: str, budget: Budget, extra: dict[str, str]
           ) -> AbstractContextManager[MlflowTracker]:
    tags = {MLFLOW_PARENT: plan.parent_run_id, "ablation.arm": arm, "ablation.seed": str(seed),
            **budget.tags(), **extra}
    return training_run(plan.mlflow, run_name=f"{arm}-s{seed}-{kind}", kind=kind, tags=tags)


def run_unit(plan: Plan, arm: Arm, seed: int, budget: Budget) -> UnitResult:
    """Mid-train (unless ``none``) and fine-tune one arm at one seed, each as an MLflow child run of the
    ablation's parent run; the result is stored as ``UNIT/result.json`` and a stored result is returned as is
    (an interrupted ablation resumes at the first unfinished unit)."""
    done = join(unit_uri(plan, arm, seed), "result.json")
    if exists(done, plan.storage):
        return UnitResult(**json.loads(read_bytes(done, plan.storage)))
    with cpu_threads(plan.threads):
        result = _train_unit(plan, arm, seed, budget)
    publish_bytes(done, json.dumps(asdict(result)).encode(), plan.storage)
    return result


def unit_uri(plan: Plan, arm: str, seed: int) -> str:
    """Where one (arm, seed) writes: its models, its random manifest and its ``result.json``."""
    return join(plan.root_uri, "arms", arm, f"seed{seed}")


def _arm_manifest(plan: Plan, arm: Arm, seed: int, out_uri: str) -> str:
    """The manifest an arm mid-trains on: the curated one, or one derived from it for the unit's seed."""
    if arm == "curated":
        return plan.manifest_uri
    if arm == "random":
        return random_manifest(plan.manifest_uri, out_uri, seed=seed, storage=plan.storage)
    return sources_manifest(plan.manifest_uri, out_uri, top=plan.top_sources, seed=seed, storage=plan.storage)


def _train_unit(plan: Plan, arm: Arm, seed: int, budget: Budget) -> UnitResult:
    unit = unit_uri(plan, arm, seed)
    start = time.perf_counter()
    model, midtrain_run, samples = plan.model, None, 0
    if arm != "none":
        manifest = _arm_manifest(plan, arm, seed, join(unit, "manifest.parquet"))
        config = MidtrainConfig(model=plan.model, manifest_uri=manifest, output_uri=join(unit, "midtrain"),
                                storage=plan.storage, train=plan.midtrain_train.model_copy(update={"seed": seed}),
                                data=plan.data)
        extra = {"manifest_uri": manifest, "lineage.manifest_uri": manifest}
        with _child(plan, arm=arm, seed=seed, kind="midtrain", budget=budget, extra=extra) as tracker:
            samples = int(log_manifest_input(tracker, manifest, plan.storage)["selected"])
            midtrain(config, tracker)
        model, midtrain_run = config.output_uri, tracker.run_id
    config = FinetuneConfig(model=model, output_uri=join(unit, "finetune"), robot=plan.robot, head=plan.head,
                            storage=plan.storage, train=plan.finetune_train.model_copy(update={"seed": seed}),
                            eval_batches=plan.eval_batches)
    extra = {"base_model_uri": model, **({PARENT: midtrain_run, "lineage.midtrain_run_id": midtrain_run}
                                         if midtrain_run else {})}
    with _child(plan, arm=arm, seed=seed, kind="finetune", budget=budget, extra=extra) as tracker:
        log_robot_inputs(tracker, plan.robot.sources, plan.storage)
        recorder = _Recorder(tracker)
        finetune(config, recorder)
        closed, rollouts = None, None
        if plan.closed_loop is not None and plan.world is not None:
            rolled = closed_loop_eval(config.output_uri, plan.world, plan.closed_loop, storage=plan.storage,
                                      tracker=tracker, step=plan.finetune_train.steps)
            log_closed_loop_artifacts(tracker.client, tracker.run_id, config.output_uri, plan.storage)
            closed = {"successes": rolled.successes, "episodes": rolled.episodes, "rate": rolled.rate}
            rollouts = join(config.output_uri, GIF) if exists(join(config.output_uri, GIF), plan.storage) else None
    curves = {m: recorder.memory.series(f"eval/{m}") for m in CURVE_METRICS}
    return UnitResult(arm=arm, seed=seed, curves={m: c for m, c in curves.items() if c},
                      midtrain_run_id=midtrain_run, finetune_run_id=tracker.run_id, midtrain_samples=samples,
                      seconds=round(time.perf_counter() - start, 2), closed_loop=closed,
                      rollouts_uri=rollouts)
