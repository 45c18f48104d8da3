"""The prefilling attack on the toy refuser: the campaign's completion opens with the target, the budget
shortens the prefill token by token, and a budget of zero is one sentence."""

from __future__ import annotations

import pytest

from mechrefusal import data, generate
from mechrefusal.attack import build_attack
from mechrefusal.attacks import ATTACKS, Attack, Behaviour, target_for
from mechrefusal.attacks.campaign import run_campaign
from mechrefusal.attacks.prefilling import Prefilling
from mechrefusal.core.errors import SettingError


@pytest.fixture(scope="module")
def behaviour() -> Behaviour:
    text = data.load("harmful", "train")[0]
    return Behaviour(text, target_for(text))


def test_the_campaign_continues_the_prefilled_target(toy, behaviour, tmp_path):
    attack = ATTACKS.get("prefilling").preset("cpu")  # type: ignore[attr-defined]
    [outcome] = run_campaign(
        toy, {"prefilling": attack}, [behaviour], out=tmp_path, max_new_tokens=6, dtype="float32", progress=False
    ).outcomes
    [case] = outcome.cases
    assert case.prompt == behaviour.text and case.prefill == behaviour.target
    assert behaviour.target.startswith("Sure, here")
    [completion] = outcome.completions
    assert completion.startswith(behaviour.target)
    continuation = generate(toy, [toy.format([behaviour.text])[0] + behaviour.target], max_new_tokens=6, rendered=True)
    assert completion == behaviour.target + continuation[0]
    assert not generate(toy, [behaviour.text], max_new_tokens=6)[0].startswith("Sure")  # the toy refuses plainly


def test_the_budget_prefills_the_first_target_tokens(toy, behaviour):
    [case] = Prefilling(tokens=2).run(toy, behaviour)
    ids = toy.tokenizer(behaviour.target, add_special_tokens=False)["input_ids"]
    assert case.prefill == toy.tokenizer.decode(ids[:2]) and behaviour.target.startswith(case.prefill)
    assert len(case.prefill) < len(behaviour.target)
    assert Prefilling(tokens=1000).run(toy, behaviour)[0].prefill == behaviour.target
    assert Prefilling().settings() == {"tokens": None}


@pytest.mark.parametrize("tokens", [0, -3])
def test_a_budget_below_one_token_is_one_sentence(tokens):
    with pytest.raises(SettingError, match=f"tokens must be at least 1 \\(or None\\), got {tokens}\\.$"):
        Prefilling(tokens=tokens)
    with pytest.raises(SettingError, match="Unknown prefilling preset 'gpu'"):
        Prefilling.preset("gpu")


def test_registered_and_built_by_the_attack_job():
    attack = build_attack("prefilling", "harmbench", dtype="float32")
    assert isinstance(attack, Attack) and isinstance(attack, Prefilling) and ATTACKS.get("prefilling") is Prefilling
