"""The two training losses, averaged per example so that any split of a batch (gradient accumulation,
data-parallel processes) gives the same gradient as the whole batch."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.models import ReplyBatch


def reply_cross_entropy(logits: Float[Tensor, "batch seq vocab"], batch: ReplyBatch) -> Float[Tensor, "batch"]:
    """Mean cross-entropy of each example's reply tokens (the safety loss on refusal targets)."""
    predicted = batch.reply_mask[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), batch.input_ids[:, 1:],
                                                   reduction="none")
    return (token_loss * predicted).sum(dim=1) / predicted.sum(dim=1)


def reply_kl(logits: Float[Tensor, "batch seq vocab"], reference: Float[Tensor, "batch seq vocab"],
             batch: ReplyBatch) -> Float[Tensor, "batch"]:
    """Mean KL(reference || model) over each example's reply positions (the utility loss)."""
    predicted = batch.reply_mask[:, 1:]
    log_p = reference[:, :-1].float().log_softmax(dim=-1)
    log_q = logits[:, :-1].float().log_softmax(dim=-1)
    token_kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return (token_kl * predicted).sum(dim=1) / predicted.sum(dim=1)
