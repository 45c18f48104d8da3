"""Direction-aware GCG on the toy refuser with its DIM direction saved: the penalty equals the squared
projections computed by hand from the model's hidden states (with and without the prefix cache), the
search lowers them from the initial suffix's, a vanishing weight is plain GCG step for step, and a model
without saved directions is one sentence."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import DirectionSet
from mechrefusal.attacks.aware_gcg import AwareGCG
from mechrefusal.attacks.gcg import GCG, _keep
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
    keep = _keep(len(suffix), prompt, checkpoint)
    with torch.no_grad():
        total = attack.loss(checkpoint, prompt, cache, inputs, keep)
        plain = GCG.loss(attack, checkpoint, prompt, cache, inputs, keep)
    start = len(prompt.before) + len(suffix)
    hand = by_hand(
        checkpoint, prompt.before + suffix.tolist() + prompt.after + prompt.target, start, start + len(prompt.after)
    )
    assert hand > 1.0
    assert float(total - plain) == pytest.approx(0.5 * hand, rel=1e-4)


def test_the_search_lowers_the_projections(checkpoint, behaviour):  # noqa: F811
    budget = SMALL | dict(steps=8, early_stop=False, dtype="float32")
    [aware] = AwareGCG(**budget, weight=1.0).run(checkpoint, behaviour, seed=0)
    initial = behaviour.text + " " + " ".join(["!"] * SMALL["suffix_length"])
    [prompt], _ = GCG(**SMALL).tokenise(checkpoint, [behaviour])
    projections = {}
    for name, text in (("aware", aware.prompt), ("initial", initial)):
        ids = checkpoint.chat.encode(checkpoint.chat.prompt(text))
        projections[name] = by_hand(checkpoint, ids, len(ids) - len(prompt.after), len(ids))
    assert aware.info["projections"] == pytest.approx(projections["aware"], rel=1e-4)
    assert projections["aware"] < 0.8 * projections["initial"]
    assert aware.info["loss"] < aware.info["initial_loss"] - 1.0


def test_a_vanishing_weight_is_plain_gcg(checkpoint, behaviour):  # noqa: F811
    budget = SMALL | dict(steps=4, early_stop=False, dtype="float32")
    aware = AwareGCG(**budget, weight=1e-9).optimise(checkpoint, [behaviour], seed=0)
    plain = GCG(**budget).optimise(checkpoint, [behaviour], seed=0)
    assert aware.suffix == plain.suffix and aware.losses == pytest.approx(plain.losses, abs=1e-6)


def test_bad_input_is_one_sentence(toy, behaviour, monkeypatch):  # noqa: F811
    with pytest.raises(SettingError, match="weight must be positive and finite, got 0.0"):
        AwareGCG(weight=0.0)
    with pytest.raises(SettingError, match="steps must be at least 1"):
        AwareGCG(steps=0)
    monkeypatch.setattr(toy, "directions", None)
    with pytest.raises(SettingError, match=r"^This model has no saved directions; the aware-gcg attack needs"):
        AwareGCG(**SMALL).run(toy, behaviour)


def test_presets_and_settings():
    harmbench = AwareGCG.preset("harmbench", weight=0.1)
    assert isinstance(harmbench, AwareGCG) and harmbench.steps == 500 and harmbench.weight == 0.1
    assert AwareGCG().settings()["weight"] == 0.01 and "white-box" in AwareGCG().caveat
    assert AwareGCG().caveat.startswith("weak attacker")
