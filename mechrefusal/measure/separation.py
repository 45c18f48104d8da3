"""How well a score tells two sets of prompts apart: ROC AUC, and the share of one set past a threshold
placed on the other (the over-refusal a refusal threshold keeping 90% of harmful prompts would give)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.errors import SettingError


def _check(scores: Tensor, name: str) -> None:
    if scores.ndim != 1 or scores.numel() == 0:
        raise SettingError(f"{name} must be a non-empty 1-D tensor of scores, got shape {tuple(scores.shape)}.")


def roc_auc(positive: Float[Tensor, " n"], negative: Float[Tensor, " m"]) -> float:
    """The chance that a random ``positive`` scores above a random ``negative``, ties counted half
    (1: every positive above every negative; 0.5: no separation)."""
    _check(positive, "positive")
    _check(negative, "negative")
    difference = positive.double()[:, None] - negative.double()[None, :]
    return float((difference > 0).double().mean() + 0.5 * (difference == 0).double().mean())


def share_above(positive: Float[Tensor, " n"], negative: Float[Tensor, " m"], keep: float = 0.9) -> float:
    """The share of ``negative`` scoring above the threshold that the top ``keep`` of ``positive`` exceed
    (the threshold is ``positive``'s ``1 - keep`` quantile, linearly interpolated)."""
    _check(positive, "positive")
    _check(negative, "negative")
    if not 0 < keep < 1:
        raise SettingError(f"keep must lie in (0, 1), got {keep}.")
    threshold = torch.quantile(positive.double(), 1 - keep)
    return float((negative.double() > threshold).double().mean())
