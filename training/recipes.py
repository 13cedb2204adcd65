"""The two recipes as plain functions: build the model, the data and the objective from a config, run the
loop, save the result. They run the same in one process or on every Ray Train worker (``training.distributed``).

    result = midtrain(MidtrainConfig(model=..., manifest_uri=..., output_uri=...), tracker)
    result = finetune(FinetuneConfig(model=..., output_uri=..., robot=RobotDataConfig(sources=[...])), tracker)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist

from core.location import Location
from training.chat import make_encoder
from training.config import FinetuneConfig, MidtrainConfig
from training.loop import TrainResult, run_training
from training.metrics import Tracker
from training.midtrain_data import check_manifest, midtrain_stream
from training.mixing import general_rows
from training.objectives import ActionLoss, sft_loss
from training.recording import flatten_params
from training.robot_data import RobotEpisodes, robot_stream
from training.stream import Position, loader, loader_workers
from training.update_modes import merged, prepare, trainable_share
from training.vla import VLA, HeadSpec, model_inputs, save_vla
from training.vlm import architecture_hash, load_vlm, save_vlm


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def midtrain(config: MidtrainConfig, tracker: Tracker | None = None, *,
             device: torch.device | None = None) -> TrainResult:
    """Mid-train ``config.model`` on the manifest's selected samples; save it to ``config.output_uri``."""
    storage = config.storage
    check_manifest(config.manifest_uri, storage)
    mix = config.data.mix
    general = general_rows(config.manifest_uri, mix, storage, seed=config.train.seed) if mix else None
    model, processor = load_vlm(Location(config.model, storage), chat_template=config.data.chat_template)
    encoder = make_encoder(processor, max_length=config.data.max_length)
    rank, world = _rank_world()
    train = config.train
    model = prepare(model, train)

    def data(start: Position) -> Iterable[dict]:
        stream = midtrain_stream(config.manifest_uri, encoder, config.data, batch_size=train.batch_size,
                                 shuffle_buffer=train.shuffle_buffer, seed=train.seed, storage=storage, rank=rank,
                                 world_size=world, start=start, general=general)
        return loader(stream, loader_workers(train.num_workers))

    result = run_training(model=model, objective=sft_loss, data=data, config=train,
                          identity={"model": architecture_hash(model)}, tracker=tracker,
                          params=_params(config, model), storage=storage, device=device)
    if rank == 0:
        save_vlm(merged(model), processor, Location(config.output_uri, storage))
    return result


def _params(config: MidtrainConfig | FinetuneConfig, model: torch.nn.Module) -> dict:
    """The flattened config and the share of parameters the update mode trains."""
    return {**flatten_params(config.model_dump(mode="json")), "trainable_share": round(trainable_share(model), 6)}


def build_vla(config: FinetuneConfig) -> tuple[VLA, RobotEpisodes]:
    """The VLA (VLM + a head seeded by ``train.seed``) and the robot episodes it is trained on; every bad input
    (action size, gripper index, chunk size, split) is rejected here, before training starts."""
    vlm, processor = load_vlm(Location(config.model, config.storage), chat_template=config.robot.chat_template)
    episodes = RobotEpisodes(config.robot, config.storage, gripper_index=config.head.gripper_index,
                             action_dim=config.head.action_dim)
    head = config.head
    spec = HeadSpec(action_dim=episodes.action_dim, chunk_size=config.robot.chunk_size,
                    gripper_index=episodes.gripper_index, hidden_dim=head.hidden_dim, pooling=head.pooling,
                    huber_delta=head.huber_delta, gripper_weight=head.gripper_weight, prompt=config.robot.prompt)
    with torch.random.fork_rng(devices=[]):  # the head's initial weights depend on the seed only
        torch.manual_seed(config.train.seed)
        vla = VLA(vlm, processor, spec, episodes.stats)
    vla.vlm = prepare(vla.vlm, config.train)  # the head is always trained
    return vla, episodes


@torch.no_grad()
def evaluate_vla(vla: VLA, episodes: RobotEpisodes, *, batch_size: int = 8, max_batches: int | None = None,
                 device: torch.device | None = None) -> dict[str, float]:
    """Held-out metrics: action L1 per arm dimension in the dataset's units (``l1/dim<i>`` and their mean
    ``l1/arm``), gripper accuracy and the held-out loss, over the valid (unpadded) chunk steps."""
    if not episodes.heldout:
        return {}
    device = device or next(vla.parameters()).device
    stream = robot_stream(episodes, vla.encoder, "heldout", batch_size=batch_size)
    arm, g = vla.stats.arm, vla.spec.gripper_index
    l1 = np.zeros(vla.spec.action_dim)
    loss = steps = correct = 0.0
    was_training = vla.training
    vla.eval()
    for i, batch in enumerate(stream):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device) for k, v in batch.items() if not k.startswith("_")}
        pred = vla(**model_inputs(batch))
        mask = batch["action_mask"].cpu().numpy()
        loss += float((vla.loss_terms(pred, batch["actions"]) * batch["action_mask"]).sum())
        err = np.abs(vla.to_actions(pred) - batch["raw_actions"].cpu().numpy())
        l1 += err[mask].sum(0)
        steps += mask.sum()
        if g is not None:
            hit = (pred[..., g] > 0).cpu().numpy() == (batch["actions"][..., g] > 0.5).cpu().numpy()
            correct += hit[mask].sum()
    vla.train(was_training)
    n = max(steps, 1.0)
    out = {f"l1/dim{i}": float(l1[i] / n) for i in arm}
    out["l1/arm"] = float(l1[arm].sum() / n / max(len(arm), 1))
    if g is not None:
        out["gripper_accuracy"] = float(correct / n)
    out["loss"] = float(loss / n)
    return out


def finetune(config: FinetuneConfig, tracker: Tracker | None = None, *,
             device: torch.device | None = None) -> TrainResult:
    """Fine-tune ``config.model`` into a VLA on the training episodes, evaluating on the held-out ones every
    ``train.eval_every`` steps and at the end; save it to ``config.output_uri``."""
    vla, episodes = build_vla(config)
    rank, world = _rank_world()
    train = config.train

    def data(start: Position) -> Iterable[dict]:
        stream = robot_stream(episodes, vla.encoder, "train", batch_size=train.batch_size,
                              shuffle_buffer=train.shuffle_buffer, seed=train.seed, rank=rank, world_size=world,
                              start=start)
        return loader(stream, loader_workers(train.num_workers))

    def evaluate(step: int) -> dict[str, float]:
        return evaluate_vla(vla, episodes, batch_size=train.batch_size, max_batches=config.eval_batches)

    identity = {"action_dim": episodes.action_dim, "chunk_size": config.robot.chunk_size,
                "model": architecture_hash(vla)}
    result = run_training(model=vla, objective=ActionLoss(vla), data=data, config=train, identity=identity,
                          tracker=tracker, params=_params(config, vla),
                          eval_hook=evaluate if episodes.heldout else None, storage=config.storage, device=device)
    if rank == 0:
        vla.vlm = merged(vla.vlm)
        save_vla(vla, Location(config.output_uri, config.storage))
    return result
