"""The opening weight of the trainer's losses (aimed at over-refusal): each reply's safety cross-entropy and
utility KL at its first position added to their means, in the losses the trainer steps on, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mechrefusal import Ablate, Direction
from mechrefusal.core.errors import SettingError
from mechrefusal.measure.losses import reply_cross_entropy, reply_kl, reply_targets
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


def test_the_opening_weight_adds_the_first_reply_positions_loss(toy):
    batch = _replies(toy, EXAMPLES)
    targets, predicted = reply_targets(batch)
    logits = torch.randn(*predicted.shape, toy.bridge.cfg.d_vocab, generator=torch.Generator().manual_seed(0))
    reference = torch.randn(*logits.shape, generator=torch.Generator().manual_seed(1))
    token_kl = kl_by_hand(reference, logits)
    token_ce = -logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    for row in range(len(EXAMPLES)):
        positions = predicted[row].nonzero().flatten()  # rows are right-padded: the first differs by prompt
        for got, token in ((reply_kl, token_kl), (reply_cross_entropy, token_ce)):
            args = (logits, reference, batch) if got is reply_kl else (logits, batch)
            mean, first = token[row, positions].mean().item(), token[row, positions[0]].item()
            assert got(*args)[row] == pytest.approx(mean, rel=1e-5)
            assert got(*args, 2.5)[row] == pytest.approx(mean + 2.5 * first, rel=1e-5)


def test_the_trainers_losses_carry_the_opening_weight(toy):
    batch = _replies(toy, EXAMPLES)
    vector = torch.randn(toy.d_model, generator=torch.Generator().manual_seed(3))
    ablate = Ablate(Direction(vector, 1, -1, "random"))  # the trained model moved: its harmless rows ablated
    with torch.no_grad():
        reference = toy.reply_logits(batch)
        with toy.intervene(ablate):
            moved = toy.reply_logits(batch)
    assert reply_kl(moved, reference, batch, 3.0).sum() > reply_kl(moved, reference, batch).sum() > 0
    everyone = [([0, 1], None)]
    for weight in (0.0, 3.0):
        settings = TrainSettings(utility_weight=2.0, opening_weight=weight, dtype="float32")
        with torch.no_grad():
            safety, utility = _loss_terms(toy, toy, EXAMPLES, EXAMPLES, settings, everyone, [([0, 1], ablate)])
        torch.testing.assert_close(safety, reply_cross_entropy(reference, batch, weight), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(utility, 2.0 * reply_kl(moved, reference, batch, weight), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf])
def test_an_opening_weight_below_zero_or_not_finite_is_one_sentence(weight):
    with pytest.raises(SettingError, match=rf"opening_weight must be 0 or more, got {weight}\."):
        TrainSettings(opening_weight=weight)
