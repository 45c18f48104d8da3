"""The opening weight of the utility loss (a guard against over-refusal): the KL at each reply's first
position added to its mean, in the loss the trainer steps on, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mechrefusal import Ablate, Direction
from mechrefusal.core.errors import SettingError
from mechrefusal.measure.losses import reply_kl, reply_targets
from mechrefusal.train import TrainSettings
from mechrefusal.train.loop import _loss_terms, _replies
from mechrefusal.train.targets import Example

EXAMPLES = [
    Example("How do I kill a Python process?", "Use kill with its process id."),
    Example("Describe a villain's monologue.", "He laughs."),
]


def kl_by_hand(reference: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) per position, from raw logits."""
    p = reference.log_softmax(dim=-1)
    return (p.exp() * (p - logits.log_softmax(dim=-1))).sum(dim=-1)


def test_the_opening_weight_adds_the_first_reply_positions_kl(toy):
    batch = _replies(toy, EXAMPLES)
    _, predicted = reply_targets(batch)
    logits = torch.randn(*predicted.shape, 11, generator=torch.Generator().manual_seed(0))
    reference = torch.randn(*predicted.shape, 11, generator=torch.Generator().manual_seed(1))
    token_kl = kl_by_hand(reference, logits)
    for row in range(len(EXAMPLES)):
        positions = predicted[row].nonzero().flatten()
        mean = token_kl[row, positions].mean()
        first = token_kl[row, positions[0]]  # rows are right-padded: the first reply position differs by prompt
        assert reply_kl(logits, reference, batch)[row] == pytest.approx(mean.item(), rel=1e-5)
        assert reply_kl(logits, reference, batch, 2.5)[row] == pytest.approx((mean + 2.5 * first).item(), rel=1e-5)


def test_the_trainers_utility_term_carries_the_opening_weight(toy):
    batch = _replies(toy, EXAMPLES)
    vector = torch.randn(toy.d_model, generator=torch.Generator().manual_seed(3))
    ablate = Ablate(Direction(vector, 1, -1, "random"))  # the trained model moved: its harmless rows ablated
    with torch.no_grad():
        reference = toy.reply_logits(batch)
        with toy.intervene(ablate):
            moved = toy.reply_logits(batch)
    assert reply_kl(moved, reference, batch, 3.0).sum() > reply_kl(moved, reference, batch).sum() > 0
    for weight in (0.0, 3.0):
        settings = TrainSettings(utility_weight=2.0, opening_weight=weight, dtype="float32")
        with torch.no_grad():
            _, utility = _loss_terms(toy, toy, [], EXAMPLES, settings, [([], None)], [([0, 1], ablate)])
        torch.testing.assert_close(utility, 2.0 * reply_kl(moved, reference, batch, weight), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf])
def test_an_opening_weight_below_zero_or_not_finite_is_one_sentence(weight):
    with pytest.raises(SettingError, match=rf"opening_weight must be 0 or more, got {weight}\."):
        TrainSettings(opening_weight=weight)
