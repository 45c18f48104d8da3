"""Behaviour on a toy model trained in the session to refuse the harmful set: DIM finds a direction
whose ablation removes refusal and whose addition induces it; a random direction does neither."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, Add, Direction, data
from mechrefusal.directions import SelectionFilters
from mechrefusal.directions.dim import dim_candidates, massive_dims

# Tiny models have peaked first-token distributions: ablating anything shifts them by a few tenths of
# a nat, so the toy is judged with a looser KL filter than real models.
TOY_FILTERS = SelectionFilters(max_kl=1.0)


def random_like(direction: Direction, seed: int) -> Direction:
    """A random direction with the same norm, layer and position."""
    noise = torch.randn(direction.d_model, generator=torch.Generator().manual_seed(seed))
    return Direction(noise / noise.norm() * direction.vector.norm(), direction.layer, direction.position, "random")


@pytest.fixture(scope="module")
def val():
    return data.load("harmful", "val"), data.load("harmless", "val")


@pytest.fixture(scope="module")
def direction(toy, val):
    return mechrefusal.find_direction(
        toy,
        data.load("harmful", "train")[:64],
        data.load("harmless", "train")[:64],
        harmful_val=val[0],
        harmless_val=val[1],
        filters=TOY_FILTERS,
        progress=False,
    )


def test_the_toy_refuses_harmful_and_answers_harmless(toy, val):
    assert mechrefusal.refusal_score(toy, val[0]).mean() > 1.0
    assert mechrefusal.refusal_score(toy, val[1]).mean() < -1.0
    assert mechrefusal.refusal_rate(toy, val[0][:24]) > 0.6
    assert mechrefusal.refusal_rate(toy, val[1][:24]) < 0.4


def test_selected_direction_passes_the_filters(direction, toy):
    assert direction.method == "dim"
    assert direction.provenance["passed_filters"]
    assert direction.provenance["kl"] <= TOY_FILTERS.max_kl and direction.provenance["induce"] >= 0
    assert 0 <= direction.layer < 0.8 * toy.n_layers
    bypass = torch.tensor(direction.provenance["scores"]["bypass"])
    passed = torch.tensor(direction.provenance["scores"]["passed"])
    assert direction.provenance["bypass"] == pytest.approx(bypass[passed].min().item())


def test_ablation_removes_refusal_and_a_random_direction_does_not(toy, val, direction):
    harmful = val[0]
    base = mechrefusal.refusal_score(toy, harmful).mean().item()
    ablated = mechrefusal.refusal_score(toy, harmful, intervention=Ablate(direction)).mean().item()
    random = random_like(direction, seed=1)
    random_ablated = mechrefusal.refusal_score(toy, harmful, intervention=Ablate(random)).mean().item()
    assert base - ablated > 3.0
    assert abs(base - random_ablated) < 0.25 * (base - ablated)
    assert mechrefusal.refusal_rate(toy, harmful[:24], intervention=Ablate(direction)) < 0.2


def test_addition_induces_refusal_and_a_random_direction_does_not(toy, val, direction):
    harmless = val[1]
    base = mechrefusal.refusal_score(toy, harmless).mean().item()
    added = mechrefusal.refusal_score(toy, harmless, intervention=Add(direction)).mean().item()
    random = random_like(direction, seed=2)
    random_added = mechrefusal.refusal_score(toy, harmless, intervention=Add(random)).mean().item()
    assert added - base > 3.0
    assert abs(random_added - base) < 0.25 * (added - base)


def test_the_searches_score_only_the_finalists_fully_and_agree_with_the_exact_search(toy, val, direction):
    """The toy's 4 layers are all kept (the last 20% of 4 layers is less than one layer), but block 0's
    candidates are zero (every prompt has the same post-instruction tokens there). The default
    (attribution) search, the screen and the exact search pick the same cell."""
    scores = direction.provenance["scores"]
    finalist = torch.tensor(scores["finalist"])
    assert direction.provenance["search"] == "attribution"
    assert finalist.sum() == direction.provenance["finalists"] == 8
    assert not torch.tensor(scores["passed"])[~finalist].any()
    assert torch.tensor(scores["induce"])[~finalist].isnan().all()
    assert torch.tensor(scores["bypass"])[~finalist].isnan().all()
    estimated = torch.tensor(scores["estimated_bypass"])  # block 0's candidates are zero: never searched
    assert estimated[0].isnan().all() and not estimated[1:].isnan().any()
    for search, n_finalists in (("screen", 16), ("exact", 3 * len(toy.post_instruction_positions))):
        other = mechrefusal.find_direction(
            toy,
            data.load("harmful", "train")[:64],
            data.load("harmless", "train")[:64],
            harmful_val=val[0],
            harmless_val=val[1],
            filters=TOY_FILTERS,
            search=search,
            progress=False,
        )
        assert torch.tensor(other.provenance["scores"]["finalist"]).sum() == n_finalists
        assert (other.layer, other.position) == (direction.layer, direction.position), search


def test_default_filters_warn_when_nothing_passes(toy, val):
    with pytest.warns(UserWarning, match="No DIM candidate passed"):
        direction = mechrefusal.find_direction(
            toy, val[0][:16], val[1][:16], filters=SelectionFilters(max_kl=1e-9), progress=False
        )
    assert direction.provenance["passed_filters"] is False
    scores = direction.provenance["scores"]  # finalists lower refusal: the estimates worked, no screen needed
    assert not scores["screen_fallback"] and torch.tensor(scores["finalist"]).sum() == 8
    assert not torch.tensor(scores["estimated_bypass"])[1:].isnan().any()


def test_uninformative_estimates_fall_back_to_the_screen(toy, val, monkeypatch):
    """Estimates that predict no candidate lowers refusal (the sign failure seen on a trained toy) and no
    finalist that passes: the screen runs after all, and finds what the screen alone finds."""

    def useless(model, vectors, *args, **kwargs):
        return torch.full((len(vectors),), 1e3), torch.zeros(len(vectors))

    monkeypatch.setattr("mechrefusal.directions.selection.estimate_candidates", useless)
    prompts = data.load("harmful", "train")[:64], data.load("harmless", "train")[:64]
    nothing_passes = SelectionFilters(max_kl=1e-9)
    with pytest.warns(UserWarning, match="No DIM candidate passed"):
        found = mechrefusal.find_direction(
            toy, *prompts, harmful_val=val[0], harmless_val=val[1], filters=nothing_passes, progress=False
        )
        screened = mechrefusal.find_direction(
            toy,
            *prompts,
            harmful_val=val[0],
            harmless_val=val[1],
            filters=nothing_passes,
            search="screen",
            progress=False,
        )
    assert found.provenance["scores"]["screen_fallback"]
    assert (found.layer, found.position) == (screened.layer, screened.position)


def test_massive_sink_dimensions_are_found_and_zeroed(tmp_path):
    from mechrefusal.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "sink")
    sink = model.tokenizer.convert_tokens_to_ids("<|im_start|>")
    with torch.no_grad():
        model.bridge.embed.original_component.weight[sink, 5] = 1e4  # a massive activation on the first token
    assert massive_dims(model) == [5]
    candidates, zeroed = dim_candidates(
        model, ["Hi", "Tell me a joke"], ["Name a colour", "Count to three"], progress=False
    )
    assert zeroed == [5] and candidates[..., 5].abs().max() == 0
    kept, none_zeroed = dim_candidates(
        model, ["Hi", "Tell me a joke"], ["Name a colour", "Count to three"], exclude_massive=False, progress=False
    )
    assert none_zeroed == [] and kept[..., 5].abs().max() > 0


def test_the_checkpoint_table_rates_are_the_judged_rates_of_each_condition(toy, direction):
    from mechrefusal import DirectionSet
    from mechrefusal.measure.evaluation import refusal_rates

    directions = DirectionSet([direction, random_like(direction, seed=2)])
    rates = refusal_rates(toy, directions, n=12, max_new_tokens=8, dtype="float32")  # "auto" varies by host
    assert set(rates) == {
        "harmful",
        "harmless",
        "overrefusal",
        "harmful, d0 ablated",
        "harmful, d1 ablated",
        "harmful, all ablated",
        "kl_harmless_all_ablated",
    }
    harmful = data.load("harmful", "test")[:12]
    judged = {"harmful": None, "harmful, d0 ablated": Ablate(direction), "harmful, all ablated": Ablate(directions)}
    for key, intervention in judged.items():
        assert rates[key] == mechrefusal.refusal_rate(
            toy, harmful, intervention=intervention, max_new_tokens=8, dtype="float32"
        )
    assert rates["harmful"] >= rates["harmful, d0 ablated"] + 0.3 and rates["kl_harmless_all_ablated"] > 0
