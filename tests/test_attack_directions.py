"""The directions attack on the toy refuser with two saved directions, its DIM direction and a random
one: one case per direction and one with both, and only the cases that ablate the DIM direction comply."""

from __future__ import annotations

import pytest

from mechrefusal import DirectionSet
from mechrefusal.attacks import ATTACKS
from mechrefusal.attacks.behaviours import load_behaviours
from mechrefusal.attacks.campaign import run_campaign
from mechrefusal.attacks.directions import DirectionsAttack
from mechrefusal.core.errors import SettingError
from tests.test_toy_refusal import random_like


@pytest.fixture
def checkpoint(toy, dim, monkeypatch):
    """The toy with the directions of a trainer checkpoint: a random direction (d0) and its DIM one (d1)."""
    monkeypatch.setattr(toy, "directions", DirectionSet([random_like(dim, 5), dim]))
    return toy


def test_one_case_per_direction_and_one_with_all(checkpoint):
    behaviour = load_behaviours("harmful", 1, split="train")[0]
    cases = DirectionsAttack().run(checkpoint, behaviour)
    assert [case.info["which"] for case in cases] == ["d0", "d1", "all"]
    assert {case.prompt for case in cases} == {behaviour.text}
    assert [c.info["which"] for c in DirectionsAttack(single=False).run(checkpoint, behaviour)] == ["all"]
    assert [c.info["which"] for c in DirectionsAttack(together=False).run(checkpoint, behaviour)] == ["d0", "d1"]
    ablated = DirectionsAttack().generation_intervention(checkpoint, cases[1])
    assert ablated.directions is checkpoint.directions[1]
    assert DirectionsAttack().generation_intervention(checkpoint, cases[2]).directions is checkpoint.directions


def test_only_the_cases_that_ablate_the_refusal_direction_comply(checkpoint, tmp_path):
    behaviours = load_behaviours("harmful", 3, split="train")
    campaign = run_campaign(
        checkpoint,
        {"directions": ATTACKS.get("directions")()},
        behaviours,
        out=tmp_path,
        max_new_tokens=8,
        dtype="float32",
        progress=False,
    )
    refused = [[v["refused"] for v in o.verdicts["substring"]] for o in campaign.outcomes]
    assert refused == [[True, False, False]] * 3


def test_each_ablation_is_answered_for_every_behaviour_in_one_batch(checkpoint, tmp_path, monkeypatch):
    """One generation per distinct ablation (not per behaviour and ablation), with the replies of answering
    each case alone."""
    from mechrefusal.attacks import campaign as campaign_module
    from mechrefusal.interventions import Ablate
    from mechrefusal.measure.generation import generate

    behaviours = load_behaviours("harmful", 3, split="train")
    calls = []
    monkeypatch.setattr(campaign_module, "generate", lambda *a, **k: calls.append(len(a[1])) or generate(*a, **k))
    attack = {"directions": ATTACKS.get("directions")()}
    kwargs = dict(out=tmp_path, max_new_tokens=8, dtype="float32", progress=False)
    campaign = run_campaign(checkpoint, attack, behaviours, **kwargs)
    assert calls == [3, 3, 3]  # d0, d1 and all, each for the three behaviours
    saved = checkpoint.directions
    for outcome in campaign.outcomes:
        alone = [
            generate(checkpoint, [outcome.behaviour.text], max_new_tokens=8, intervention=Ablate(d))[0]
            for d in (saved[0], saved[1], saved)
        ]
        assert outcome.completions == alone


def test_bad_input_is_one_sentence(toy, checkpoint, monkeypatch):
    behaviour = load_behaviours("harmful", 1, split="train")[0]
    with pytest.raises(SettingError, match="needs single or together"):
        DirectionsAttack(single=False, together=False)
    with pytest.raises(SettingError, match="Unknown directions-attack preset"):
        DirectionsAttack.preset("gpu")
    monkeypatch.setattr(toy, "directions", DirectionSet([checkpoint.directions[0]]))
    with pytest.raises(SettingError, match="needs two or more saved directions"):
        DirectionsAttack(single=False).run(toy, behaviour)
    monkeypatch.setattr(toy, "directions", None)
    with pytest.raises(SettingError, match=r"^This model has no saved directions; the directions attack needs"):
        DirectionsAttack().run(toy, behaviour)


def test_presets_and_settings():
    assert DirectionsAttack.preset("harmbench") == DirectionsAttack.preset("cpu") == DirectionsAttack()
    assert DirectionsAttack().settings() == {"single": True, "together": True, "dtype": "auto"}
    assert DirectionsAttack().caveat.startswith("white-box")
