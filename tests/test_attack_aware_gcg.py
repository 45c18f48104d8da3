"""Direction-aware GCG on the toy refuser with its DIM direction saved: the penalty equals the squared
projections computed by hand from the model's hidden states (with and without the prefix cache) and enters
the loss only once the target is forced; the search forces the target as plain GCG does and then ends with
far lower projections than plain GCG's; it never leaves a forced suffix for an unforced one; a vanishing
weight is plain GCG step for step; and a model without saved directions is one sentence."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mechrefusal import DirectionSet, generate
from mechrefusal.attacks import target_losses
from mechrefusal.attacks.aware_gcg import AwareGCG
from mechrefusal.attacks.gcg import GCG, target_positions
from mechrefusal.core.errors import SettingError
from tests.test_attack_gcg import SMALL, behaviour  # noqa: F401  the fixture
from tests.test_toy_refusal import random_like


@pytest.fixture
def checkpoint(toy, dim, monkeypatch):
    """The toy with its DIM direction and a random one at another layer saved."""
    other = random_like(dim, 9)
    other.layer = (dim.layer + 1) % toy.n_layers
    monkeypatch.setattr(toy, "directions", DirectionSet([dim, other]))
    return toy


def by_hand(model, ids: list[int], start: int, stop: int) -> float:
    """Summed squared projections of the hidden states (block inputs) at positions start..stop-1."""
    with torch.no_grad():
        hidden = model.hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    return sum(float((hidden[d.layer][0, start:stop] @ d.unit).square().sum()) for d in model.directions)


@pytest.mark.parametrize("cached", [True, False])
def test_the_penalty_equals_a_hand_computation(checkpoint, behaviour, cached):  # noqa: F811
    attack = AwareGCG(**SMALL | dict(weight=0.5, dtype="float32", prefix_cache=cached))
    [prompt], suffix = attack.tokenise(checkpoint, [behaviour])
    cache = attack.encode_prefix(checkpoint, prompt)
    inputs = torch.tensor([suffix.tolist() + prompt.after + prompt.target])
    keep = target_positions(len(suffix), prompt, checkpoint)
    with torch.no_grad():
        target, penalty = attack.terms(checkpoint, prompt, cache, inputs, keep)
        plain = GCG.loss(attack, checkpoint, prompt, cache, inputs, keep)
        forcing = attack.loss(checkpoint, prompt, cache, inputs, keep)
        steering = replace(attack, force_below=1.0).loss(checkpoint, prompt, cache, inputs, keep)
    start = len(prompt.before) + len(suffix)
    hand = by_hand(
        checkpoint, prompt.before + suffix.tolist() + prompt.after + prompt.target, start, start + len(prompt.after)
    )
    assert hand > 1.0 and 0.1 < float(plain) < 1.0
    assert float(penalty) == pytest.approx(hand, rel=1e-4) and float(target) == pytest.approx(float(plain), abs=1e-6)
    penalised = float(plain) + 0.5 * hand
    assert float(forcing) == pytest.approx(float(plain), abs=1e-6)
    assert float(steering) == pytest.approx(penalised / (1.0 + penalised), rel=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_it_forces_the_target_as_gcg_does_with_lower_projections(checkpoint, behaviour, seed):  # noqa: F811
    budget = SMALL | dict(early_stop=False, dtype="float32")
    [aware] = AwareGCG(**budget, weight=1.0).run(checkpoint, behaviour, seed=seed)
    [plain] = GCG(**budget).run(checkpoint, behaviour, seed=seed)
    [prompt], _ = GCG(**SMALL).tokenise(checkpoint, [behaviour])
    projections, replies = {}, {}
    for name, case in (("aware", aware), ("plain", plain)):
        ids = checkpoint.chat.encode(checkpoint.chat.prompt(case.prompt))
        projections[name] = by_hand(checkpoint, ids, len(ids) - len(prompt.after), len(ids))
        [replies[name]] = generate(checkpoint, [case.prompt], max_new_tokens=8)
    [target] = target_losses(checkpoint, [aware.prompt], [behaviour.target], dtype="float32")
    assert aware.info["projections"] == pytest.approx(projections["aware"], rel=1e-4)
    assert aware.info["target_loss"] == pytest.approx(float(target), abs=1e-5)
    assert aware.info["steering_from"] is not None and aware.info["target_loss"] < 0.1
    assert replies["aware"].startswith("Here is") and replies["plain"].startswith("Here is")
    assert projections["aware"] < 0.5 * projections["plain"]


def test_it_never_leaves_a_forced_suffix(checkpoint, behaviour):  # noqa: F811
    """A step may not trade a forced suffix (target loss below force_below) for an unforced one; GCG's loop
    keeps the current suffix when ``moves`` says no."""
    aware = AwareGCG(force_below=0.1)
    assert not aware.moves(0.05, 0.2) and aware.moves(0.05, 0.08) and aware.moves(0.3, 0.5)
    assert GCG().moves(0.05, 0.2)  # GCG always moves, even to a worse suffix

    class Stays(AwareGCG):
        def moves(self, current: float, best: float) -> bool:
            return False

    budget = SMALL | dict(steps=3, early_stop=False, dtype="float32")
    kept = Stays(**budget, weight=1.0).optimise(checkpoint, [behaviour], seed=0)
    initial = " " + " ".join(["!"] * budget["suffix_length"])
    assert kept.suffix == initial and len(set(kept.losses)) == 1  # before the hook: GCG always moved


def test_a_vanishing_weight_is_plain_gcg(checkpoint, behaviour):  # noqa: F811
    """Step for step, steering included; its losses are the squashed target losses there."""
    budget = SMALL | dict(steps=6, early_stop=False, dtype="float32")
    aware = AwareGCG(**budget, weight=1e-9).optimise(checkpoint, [behaviour], seed=0)
    plain = GCG(**budget).optimise(checkpoint, [behaviour], seed=0)
    assert aware.steering_from is not None and aware.steering_from < budget["steps"] - 1
    squashed = [loss if loss >= 0.1 else 0.1 * loss / (0.1 + loss) for loss in plain.losses]
    assert aware.suffix == plain.suffix and aware.losses == pytest.approx(squashed, abs=1e-6)


def test_bad_input_is_one_sentence(toy, behaviour, monkeypatch):  # noqa: F811
    with pytest.raises(SettingError, match="weight must be positive and finite, got 0.0"):
        AwareGCG(weight=0.0)
    with pytest.raises(SettingError, match="force_below must be positive and finite, got -0.1"):
        AwareGCG(force_below=-0.1)
    with pytest.raises(SettingError, match="steps must be at least 1"):
        AwareGCG(steps=0)
    monkeypatch.setattr(toy, "directions", None)
    with pytest.raises(SettingError, match=r"^This model has no saved directions; the aware-gcg attack needs"):
        AwareGCG(**SMALL).run(toy, behaviour)


def test_presets_and_settings():
    harmbench = AwareGCG.preset("harmbench", weight=0.1)
    assert isinstance(harmbench, AwareGCG) and harmbench.steps == 500 and harmbench.weight == 0.1
    assert AwareGCG().settings()["weight"] == 0.01 and AwareGCG().settings()["force_below"] == 0.1
    assert "white-box" in AwareGCG().caveat
    assert AwareGCG().caveat.startswith("weak attacker")
