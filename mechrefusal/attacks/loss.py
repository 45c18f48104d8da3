"""The target loss every optimising attack minimises: cross-entropy of the target reply opening."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mechrefusal.interventions import Interventions
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.autocast import autocast


def target_losses(
    model: Model,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    intervention: Interventions = None,
    batch_size: int = 16,
    dtype: str = "auto",
) -> Float[Tensor, " n"]:
    """Mean per-token cross-entropy of each ``targets[i]`` as the reply to user message ``prompts[i]``
    (no end-of-turn token after the target), under ``intervention``; logits only at target positions."""
    losses = []
    with torch.no_grad(), model.intervene(intervention), autocast(model, dtype):
        for start in range(0, len(prompts), batch_size):
            batch = model.tokenize_replies(
                prompts[start : start + batch_size], targets[start : start + batch_size], end_of_turn=False
            )
            losses.append(reply_losses(model, batch))
    return torch.cat(losses)


def reply_losses(model: Model, batch: ReplyBatch) -> Float[Tensor, " batch"]:
    """Mean per-token cross-entropy of each row's reply tokens (hooks active, differentiable): the loss
    `target_losses` reports, which the white-box attacks descend with gradients."""
    logits = model.reply_logits(batch).float()
    window = batch.predictions
    labels = batch.input_ids[:, window.start + 1 : window.stop + 1]
    mask = batch.reply_mask[:, window.start + 1 : window.stop + 1]
    token_losses = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    return (token_losses * mask).sum(1) / mask.sum(1)
