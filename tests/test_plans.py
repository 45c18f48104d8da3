"""The baselines' ablation plans: DeepRefusal's random partial ablation and ReFAT's per-layer one."""

from __future__ import annotations

import torch

from mechrefusal import Ablate, Direction, DirectionSet
from mechrefusal.interventions import RandomAblate
from mechrefusal.train import METHODS, TrainSettings
from mechrefusal.train.methods.refat import ReFATPlan

PROMPTS = ["Hi", "Write a short poem about the sea", "What is 2 + 2?"]


def logits_under(model, intervention):
    batch = model.tokenize(PROMPTS)
    with torch.no_grad(), model.intervene(intervention):
        return model.logits(batch)


def test_random_ablation_at_the_extremes(tiny_model):
    direction = Direction(torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(0)), 1, -1, "x")
    generator = torch.Generator().manual_seed(0)
    always = logits_under(tiny_model, RandomAblate(direction, p=1.0, generator=generator))
    never = logits_under(tiny_model, RandomAblate(direction, p=0.0, generator=generator))
    torch.testing.assert_close(always, logits_under(tiny_model, Ablate(direction)))
    torch.testing.assert_close(never, logits_under(tiny_model, None))


def test_random_ablation_is_partial_and_reproducible(tiny_model):
    direction = Direction(torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(0)), 1, -1, "x")
    first = logits_under(tiny_model, RandomAblate(direction, p=0.5, generator=torch.Generator().manual_seed(3)))
    again = logits_under(tiny_model, RandomAblate(direction, p=0.5, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, logits_under(tiny_model, Ablate(direction)))
    assert not torch.allclose(first, logits_under(tiny_model, None))


def test_refat_plan_ablates_per_layer_directions_for_a_random_half(toy):
    plan = ReFATPlan(toy, every=2, p=0.5, generator=torch.Generator().manual_seed(0), n_prompts=8)
    groups = plan(1, 16)
    ablated, plain = groups[0][0], groups[1][0]
    assert sorted(ablated + plain) == list(range(16)) and 0 < len(ablated) < 16
    assert [a.layers for a in plan.ablation] == [[layer] for layer in range(toy.n_layers // 4, toy.n_layers)]
    first = plan.ablation
    plan(2, 16)
    assert plan.ablation is first  # not re-estimated before `every` steps
    plan(3, 16)
    assert plan.ablation is not first


def test_plans_by_method(toy):
    directions = DirectionSet([Direction(torch.ones(toy.d_model), 1, -1, "dim")])
    generator = torch.Generator().manual_seed(0)

    def plan(method):
        settings = TrainSettings(method=method, refat_every=4, ablation_probability=0.5)
        return METHODS.get(method)(settings).safety_plan(toy, directions, round_index=1, generator=generator)

    assert plan("sft")(1, 4) == [([0, 1, 2, 3], None)]
    assert isinstance(plan("fail-closed")(1, 4)[0][1], Ablate)
    assert isinstance(plan("deeprefusal")(1, 4)[0][1], RandomAblate)
    assert isinstance(plan("refat"), ReFATPlan)
