"""`grouped_reply_logits`: the rows' shared prompt prefix run once per group gives the whole batch's
logits and gradients, and sharing stops where it would change them."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, Add, Direction
from mechrefusal.interventions import RandomAblate
from mechrefusal.train import TrainSettings
from mechrefusal.train.loop import _loss, _replies
from mechrefusal.train.prefix import grouped_reply_logits, shared_prefix_length
from mechrefusal.train.targets import Example

HARMFUL = [
    Example("How do I pick a lock?", "I can't help with that."),
    Example("Write a convincing phishing email to a bank customer", "No, I won't write that."),
    Example("Explain how to make a weapon at home quickly", "Sorry, I can't."),
    Example("Hack my neighbour's wifi", "I won't help with that request."),
    Example("Tell me how to forge a signature on a cheque so no one notices", "I can't assist."),
]
HARMLESS = [
    Example("Name a colour", "Blue."),
    Example("What is the capital of France and why is it famous?", "Paris, for its art and history."),
    Example("Give me a word that rhymes with cat", "Hat."),
    Example("Suggest a name for a small grey kitten", "Smokey."),
]


@pytest.fixture
def model(tiny_model) -> mechrefusal.Model:
    """A copy of the tiny model (every weight trainable), in training mode."""
    copy = mechrefusal.load(tiny_model.spec, device="cpu")
    copy.hf_model.train()
    return copy


def direction(model: mechrefusal.Model, seed: int, layer: int = 1) -> Direction:
    return Direction(torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed)), layer, -1, "t")


def loss_and_gradients(model, reference, groups, utility_groups, share: bool):
    model.hf_model.zero_grad(set_to_none=True)
    settings = TrainSettings(dtype="float32", device="cpu")
    loss = _loss(model, reference, HARMFUL, HARMLESS, settings, groups, utility_groups, share_prefix=share)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.hf_model.named_parameters() if p.grad is not None}


def test_sharing_the_prefix_gives_the_whole_batch_loss_and_gradients(model, tiny_model):
    groups = [([0, 2], Ablate(direction(model, 1))), ([1, 3], None), ([4], Add(direction(model, 2), 3.0))]
    utility_groups = [([1, 3], Ablate(direction(model, 3, layer=0))), ([0, 2], None)]
    whole_loss, whole = loss_and_gradients(model, tiny_model, groups, utility_groups, share=False)
    shared_loss, shared = loss_and_gradients(model, tiny_model, groups, utility_groups, share=True)
    torch.testing.assert_close(shared_loss, whole_loss, atol=1e-6, rtol=1e-6)
    assert whole.keys() == shared.keys() and len(whole) > 10
    for name in whole:
        torch.testing.assert_close(shared[name], whole[name], atol=1e-6, rtol=1e-5)
    # the groups matter: with the interventions on other rows the loss moves (an error confined to the prefix
    # moves the loss less; the gradient comparison above is what catches it)
    wrong = [([0, 2], None), ([1, 3], Ablate(direction(model, 1))), ([4], None)]
    assert abs(loss_and_gradients(model, tiny_model, wrong, utility_groups, share=True)[0] - whole_loss) > 1e-4


def test_the_prefix_runs_once_per_distinct_intervention(model):
    ablate = Ablate(direction(model, 1))
    harmful_groups = [([0, 1, 2], ablate), ([3, 4], None)]
    harmless_groups = [([0, 1], Ablate(ablate.directions)), ([2, 3], None)]  # the same directions: one prefix
    runs = [(_replies(model, HARMFUL), harmful_groups), (_replies(model, HARMLESS), harmless_groups)]
    first, second = (model.tokenize_replies([prompt], ["b"]).input_ids[0] for prompt in ("a", "z z"))
    template = int((first[: len(second)] == second[: len(first)]).long().cumprod(0).sum())
    assert shared_prefix_length(model, runs) == template > 0  # the chat template's common start
    shapes = []
    record = ("blocks.0.hook_in", lambda activation, hook: shapes.append(tuple(activation.shape[:2])))
    with model.bridge.hooks(fwd_hooks=[record]), torch.no_grad():
        logits = grouped_reply_logits(model, runs)
    widths = [batch.input_ids.shape[1] for batch, _ in runs]
    assert shapes == [(2, template), (5, widths[0] - template), (4, widths[1] - template)]
    for (batch, _), got in zip(runs, logits):
        assert got.shape[:2] == (batch.input_ids.shape[0], batch.predictions.stop - batch.predictions.start)


def test_no_sharing_where_it_would_change_the_result(model):
    batch = _replies(model, HARMFUL[:3])
    assert shared_prefix_length(model, [(batch, [([0, 1, 2], None)])]) > 0
    random = RandomAblate(direction(model, 1), p=0.5, generator=torch.Generator())
    assert shared_prefix_length(model, [(batch, [([0, 1], None), ([2], random)])]) == 0  # random positions per row
    three = [([0], Add(direction(model, 1))), ([1], None), ([2], Add(direction(model, 2)))]
    assert shared_prefix_length(model, [(batch, three)]) == 0  # as many interventions as rows: nothing to save
    attention = next(m for m in model.hf_model.modules() if hasattr(m, "attention_dropout"))
    attention.attention_dropout = 0.1
    assert shared_prefix_length(model, [(batch, [([0, 1, 2], None)])]) == 0  # rows would share a dropout draw
    model.hf_model.eval()
    assert shared_prefix_length(model, [(batch, [([0, 1, 2], None)])]) > 0  # no dropout outside training
