"""Losses on reply tokens: the trainer's two losses (safety and utility) and utility's held-out cross-entropy
and KL. Averaged per example, so that any split of a batch (gradient accumulation, data-parallel processes)
gives the same gradient as the whole batch."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechrefusal.models import ReplyBatch


def reply_cross_entropy(logits: Float[Tensor, "batch window vocab"], batch: ReplyBatch) -> Float[Tensor, " batch"]:
    """Mean cross-entropy of each example's reply tokens (the safety loss on refusal targets), from the
    logits at ``batch.predictions`` (`Model.reply_logits`, or full logits sliced there)."""
    targets, predicted = reply_targets(batch)
    token_loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return (token_loss * predicted).sum(dim=1) / predicted.sum(dim=1)


def reply_kl(
    logits: Float[Tensor, "batch window vocab"], reference: Float[Tensor, "batch window vocab"], batch: ReplyBatch
) -> Float[Tensor, " batch"]:
    """Mean KL(reference || model) over each example's reply positions (the utility loss), from both
    models' logits at ``batch.predictions``."""
    _, predicted = reply_targets(batch)
    log_p = reference.float().log_softmax(dim=-1)
    log_q = logits.float().log_softmax(dim=-1)
    token_kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return (token_kl * predicted).sum(dim=1) / predicted.sum(dim=1)


def reply_targets(batch: ReplyBatch) -> tuple[Int[Tensor, "batch window"], Bool[Tensor, "batch window"]]:
    """The tokens the logits at ``batch.predictions`` predict, and which of them are reply tokens."""
    window = batch.predictions
    following = slice(window.start + 1, window.stop + 1)
    return batch.input_ids[:, following], batch.reply_mask[:, following]
