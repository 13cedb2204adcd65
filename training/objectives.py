"""The two objectives. Each returns (loss summed over the batch's valid units, count of valid units): the loop
divides by the count of the whole accumulated step (all micro-batches, all ranks), so every valid token or
action step weighs the same however the step is split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.chat import IGNORE
from training.vla import VLA, model_inputs


def sft_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy on the labelled (assistant) tokens.

    Logits are computed only at the positions whose next token is labelled in some row (``logits_to_keep``), so
    a 150k-260k vocabulary costs [batch, answer tokens, vocab], never [batch, sequence, vocab]: the image and
    prompt tokens, most of a VLM's sequence, get no logits.
    """
    labels = batch["labels"][:, 1:]  # token t predicts token t + 1
    keep = (labels != IGNORE).any(0).nonzero().squeeze(1)
    logits = model(**model_inputs(batch), logits_to_keep=keep, return_dict=True).logits
    targets = labels[:, keep]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, (targets != IGNORE).sum()


class ActionLoss:
    """Huber on the arm dimensions + BCE on the gripper, summed over the valid (unpadded) chunk steps."""

    def __init__(self, vla: VLA) -> None:
        self.vla = vla  # the unwrapped model, for its loss settings; the call goes through ``model``

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        pred = model(**model_inputs(batch))
        loss = self.vla.loss_terms(pred, batch["actions"])
        return (loss * batch["action_mask"].float()).sum(), batch["action_mask"].sum()
