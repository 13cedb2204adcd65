"""One train loop for both objectives (mid-training SFT and the VLA action loss).

Reads top to bottom: resume if a checkpoint exists, then for every optimizer step take ``grad_accum``
micro-batches, backpropagate each one's *summed* loss, divide the gradients by the valid units (tokens or action
steps) of the whole step across all ranks, clip, step AdamW at the LR of this step, and log / evaluate /
checkpoint at their intervals. Under torch.distributed (Ray Train sets it up) the model is wrapped in DDP and
each rank reads its own slice of every global batch; metrics and checkpoints come from rank zero.

A resume continues from the checkpoint's step with its loss history, RNG states and global data position (the
same batches as an uninterrupted run, whatever the ranks x DataLoader workers now; see ``training.stream``), says
so on the console, and sends the tracker nothing for the steps it had already logged before the interruption.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.location import Location
from core.settings import StorageConfig
from training.checkpoint import Checkpoints, load_checkpoint, read_state, rng_state, set_rng_state
from training.config import TrainConfig
from training.metrics import Tracker, peak_flops
from training.stream import Position, close, loader_workers

Objective = Callable[[nn.Module, dict], tuple[torch.Tensor, torch.Tensor]]
# the global data position to start from -> batches; see training.stream
DataFactory = Callable[[Position], Iterable[dict]]
EvalHook = Callable[[int], dict[str, float]]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the run stops before applying that step."""


@dataclass
class TrainResult:
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    checkpoint: str | None = None
    resumed_from: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    eval: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    wall_s: float = 0.0
    data_wait_s: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    def summary(self) -> dict[str, Any]:
        """Flat numbers for a report: steps, final loss, throughput, skipped samples, last evaluation."""
        return {"steps": self.steps, "final_loss": self.final_loss, "samples": self.samples,
                "samples_per_s": self.samples / self.wall_s if self.wall_s else 0.0,
                "data_wait_share": self.data_wait_s / self.wall_s if self.wall_s else 0.0,
                **{f"skipped/{k}": v for k, v in self.skipped.items()},
                **{f"eval/{k}": v for k, v in self.eval.items()}}


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_ratio`` of the steps, then cosine down to ``min_lr_ratio`` of the peak."""
    warmup = math.ceil(config.warmup_ratio * config.steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _dist() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _total(skipped: Counter, world: int) -> dict[str, int]:
    """Skipped samples of every rank added up (each rank counts the slots it decoded). Collective: every rank
    calls it at the same steps."""
    total: Counter = Counter()
    for part in _gather(dict(skipped), world):
        total.update(part)
    return dict(total)


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.precision == "bf16" and device.type != "cuda":
        raise ValueError("train.precision bf16 needs a CUDA device; use auto or fp32 on CPU")
    if device.type == "cuda" and config.precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_identity(path: Location, saved: dict[str, Any], identity: dict[str, Any]) -> None:
    """A checkpoint of another model, or for another action size, is refused before loading anything."""
    for key, value in identity.items():
        if saved.get(key) != value:
            raise ValueError(f"train.checkpoint_uri {path}: the checkpoint's {key} is {saved.get(key)!r}, "
                             f"this run's is {value!r} (a checkpoint of another model or setup)")


def run_training(
    *,
    model: nn.Module,
    objective: Objective,
    data: DataFactory,
    config: TrainConfig,
    identity: dict[str, Any],
    tracker: Tracker | None = None,
    params: dict[str, Any] | None = None,
    eval_hook: EvalHook | None = None,
    storage: StorageConfig | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` optimizer steps; see the module docstring.

    ``identity`` (e.g. the architecture hash and action size) is stored in every checkpoint and must match on
    resume. ``eval_hook(step)`` runs on rank zero every ``eval_every`` steps and at the end.
    """
    rank, world = _dist()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = _autocast(config, device)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    result, position, step, logged = TrainResult(), (0, 0), 0, 0
    skipped: Counter = Counter()  # this rank's; rank zero also holds what a resumed checkpoint counted

    checkpoints = Checkpoints(Location(config.checkpoint_uri, storage)) if config.checkpoint_uri else None
    if checkpoints and config.resume and (path := checkpoints.latest()):
        _check_identity(path, read_state(path)["identity"], identity)
        state, rngs = load_checkpoint(path, model, optimizer)
        if "position" not in state:
            raise ValueError(f"train.checkpoint_uri {path}: a checkpoint with per-worker data positions (written "
                             "before the data order became global) cannot be resumed; start a new run or set "
                             "train.resume false")
        step, result.losses, result.resumed_from = state["step"], state["losses"], state["step"]
        position = (int(state["position"][0]), int(state["position"][1]))
        if rank == 0:
            skipped.update(state["skipped"])
        # other ranks had other RNG streams; a resume on more ranks than were saved reuses them in turn
        set_rng_state(rngs[rank % len(rngs)])
        result.checkpoint = path.uri
        logged = checkpoints.logged_step()
        if rank == 0:
            print(f"resuming from step {step} (checkpoint {path})", flush=True)

    # Some weights take no part in the loss (a vision tower's unused last norm, the VLA's LM head): DDP must
    # not wait for their gradients.
    ddp = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    peak = peak_flops(device, config.peak_tflops)
    flops_per_token = 6 * sum(p.numel() for p in model.parameters())
    if rank == 0 and tracker is not None and params:
        tracker.log_params(params)

    window = {"t": time.perf_counter(), "wait": 0.0, "samples": 0, "tokens": 0, "steps": 0}
    start = time.perf_counter()
    batches = iter(data(position))
    try:
        while step < config.steps:
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            count = torch.zeros((), device=device, dtype=torch.float64)
            samples = torch.zeros((), device=device, dtype=torch.float64)
            for micro in range(config.grad_accum):
                t0 = time.perf_counter()
                batch = next(batches)
                window["wait"] += time.perf_counter() - t0
                result.data_wait_s += time.perf_counter() - t0
                position = batch.pop("_position")  # the same on every rank: the end of this global micro-batch
                skipped.update(batch.pop("_skipped"))
                weight = batch.pop("_weight")
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                if weight:
                    samples += batch["input_ids"].shape[0]
                    window["tokens"] += int(batch["attention_mask"].sum())
                # DDP all-reduces gradients on the last micro-batch only
                sync = ddp.no_sync() if world > 1 and micro < config.grad_accum - 1 else contextlib.nullcontext()
                with sync:
                    with autocast:
                        micro_loss, micro_count = objective(ddp, batch)
                    if not weight:  # a stand-in for a micro-batch whose every sample was skipped: counts nothing
                        micro_loss, micro_count = micro_loss * 0, micro_count * 0
                    micro_loss.backward()  # a sum: normalised below by the whole step's count
                loss_sum += micro_loss.detach().double()
                count += micro_count.detach().double()
            if world > 1:
                totals = torch.stack([loss_sum, count, samples])
                dist.all_reduce(totals)
                loss_sum, count, samples = totals[0], totals[1], totals[2]
            # DDP averaged the summed gradients over ranks: x world / count gives d(total loss / total count)
            scale = world / max(count.item(), 1.0)
            for p in trainable:
                if p.grad is not None:
                    p.grad.mul_(scale)
            loss = loss_sum.item() / max(count.item(), 1.0)  # one sync per step: a NaN must never be applied
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.clip or math.inf)
            if not (math.isfinite(loss) and torch.isfinite(grad_norm)):
                raise NonFiniteLoss(f"loss {loss} (grad norm {float(grad_norm)}) at step {step + 1}: run stopped; "
                                    f"last good checkpoint: {result.checkpoint or 'none'}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.losses.append(loss)
            result.samples += int(samples.item())
            window["samples"] += int(samples.item())
            window["steps"] += 1

            last = step == config.steps
            fresh = step > logged  # steps up to ``logged`` reached the tracker before an interruption
            sent = False
            if step % config.log_every == 0 or last:
                totals_skipped = _total(skipped, world)
                if rank == 0 and tracker is not None and fresh:
                    elapsed = time.perf_counter() - window["t"]
                    metrics = {"loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                               "samples_per_s": window["samples"] / elapsed,
                               "tokens_per_s": window["tokens"] * world / elapsed,
                               "data_wait_share": window["wait"] / elapsed,
                               **{f"skipped/{k}": float(v) for k, v in totals_skipped.items()}}
                    if peak is not None:
                        metrics["mfu"] = flops_per_token * metrics["tokens_per_s"] / (peak * world)
                    tracker.log_metrics(metrics, step)
                    sent = True
                window.update(t=time.perf_counter(), wait=0.0, samples=0, tokens=0, steps=0)
            evaluate = (config.eval_every and step % config.eval_every == 0 and fresh) or last
            if eval_hook is not None and rank == 0 and evaluate:
                model.eval()
                result.eval = eval_hook(step)
                model.train()
                if tracker is not None and fresh:
                    tracker.log_metrics({f"eval/{k}": v for k, v in result.eval.items()}, step)
                    sent = True
            if sent and checkpoints:  # so that a resume does not send this step again
                checkpoints.mark_logged(step)
            if checkpoints and ((config.checkpoint_every and step % config.checkpoint_every == 0) or last):
                totals_skipped = _total(skipped, world)
                rngs = _gather(rng_state(), world)
                if rank == 0:
                    state = {"identity": identity, "losses": result.losses, "world_size": world,
                             "num_workers": loader_workers(config.num_workers), "skipped": totals_skipped,
                             "position": list(position)}
                    result.checkpoint = checkpoints.save(step, model, optimizer, state, rngs).uri
                if world > 1:
                    dist.barrier()
    finally:
        close(batches)  # a failed run's DataLoader workers stop now, not when the interpreter exits

    result.steps, result.skipped = step, _total(skipped, world)
    result.wall_s = time.perf_counter() - start
    return result
