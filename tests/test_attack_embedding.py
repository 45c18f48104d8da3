"""The embedding-space attack on the toy refuser: the target loss falls, the stored vectors give back the
final loss through `generation_intervention` (parity), and generation with a KV cache, without one and in a
padded batch sees the same vectors."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import Ablate, Direction, data, generate
from mechrefusal.attack import build_attack
from mechrefusal.attacks import ATTACKS, Attack, Behaviour, target_losses
from mechrefusal.attacks.campaign import run_campaign
from mechrefusal.attacks.embedding import EmbeddingAttack, stored
from mechrefusal.core.errors import SettingError
from tests.toy import COMPLIANCE

SMALL = dict(steps=30, suffix_length=4, dtype="float32", progress=False)


@pytest.fixture(scope="module")
def behaviour(toy) -> Behaviour:
    """The first harmful train prompt the toy refuses with the placeholders appended."""
    prompts = data.load("harmful", "train")[:16]
    replies = generate(toy, [p + " ! ! ! !" for p in prompts], max_new_tokens=8)
    return Behaviour(next(p for p, r in zip(prompts, replies) if "cannot" in r), COMPLIANCE)


@pytest.fixture(scope="module")
def ablate(toy) -> Ablate:
    return Ablate(Direction(torch.randn(toy.d_model, generator=torch.Generator().manual_seed(3)), 1, -1, "random"))


@pytest.mark.parametrize("optimiser", ["sign", "adam"])
def test_the_loss_falls_and_the_stored_vectors_give_it_back(toy, behaviour, ablate, optimiser):
    attack = EmbeddingAttack(**SMALL, optimiser=optimiser)
    for intervention in (None, ablate):
        [case] = attack.run(toy, behaviour, intervention=intervention)
        info = case.info
        assert case.prompt == behaviour.text + " ! ! ! !"
        assert info["loss"] < 0.2 * info["initial_loss"]
        assert torch.tensor(info["embeddings"]).shape == (len(info["offsets"]), toy.d_model)
        plain, attacked = target_losses(
            toy,
            [case.prompt] * 2,
            [behaviour.target] * 2,
            intervention=[*([intervention] if intervention else []), attack.generation_intervention(toy, case)],
            dtype="float32",
        )  # both rows hold the prompt, so both are edited
        assert float(attacked) == pytest.approx(info["loss"], abs=1e-5) and float(plain) == float(attacked)
        unedited = target_losses(toy, [case.prompt], [behaviour.target], intervention=intervention, dtype="float32")
        assert float(unedited) == pytest.approx(info["initial_loss"], abs=1e-5)


def test_the_campaign_answers_with_the_vectors_in_place(toy, behaviour, tmp_path):
    attack = ATTACKS.get("embedding").preset("cpu", **SMALL)  # type: ignore[attr-defined]
    [outcome] = run_campaign(
        toy, {"embedding": attack}, [behaviour], out=tmp_path, max_new_tokens=6, dtype="float32", progress=False
    ).outcomes
    [case], [completion] = outcome.cases, outcome.completions
    assert completion.startswith("Here is") and "cannot" not in completion
    assert "cannot" in generate(toy, [case.prompt], max_new_tokens=6)[0]  # the placeholders alone are refused
    # greedy decoding by hand, no KV cache: every pass holds the whole prompt, so every pass is edited
    ids = toy.tokenize([case.prompt]).input_ids
    with torch.no_grad(), toy.intervene(attack.generation_intervention(toy, case)):
        for _ in range(6):
            ids = torch.cat([ids, toy.bridge(ids)[:, -1:].argmax(-1)], dim=1)
        # in a left-padded batch behind a longer prompt the edited row answers the same
        padded = generate(toy, [case.prompt, "x " * 40 + case.prompt], max_new_tokens=6)
    assert completion == toy.tokenizer.decode(ids[0, -6:], skip_special_tokens=True)
    assert padded[0] == completion


def test_deterministic_and_settings(toy, behaviour):
    attack = EmbeddingAttack(**SMALL | dict(steps=3))
    assert attack.run(toy, behaviour, seed=0) == attack.run(toy, behaviour, seed=0)
    assert attack.settings() == dict(steps=3, suffix_length=4, step_size=0.1, optimiser="sign", dtype="float32")
    assert attack.caveat == "weak attacker: 3 steps (the harmbench preset: 500)"
    assert EmbeddingAttack.preset("harmbench").caveat == ""


def test_stored_keeps_six_significant_digits():
    assert stored(torch.tensor([[1.23456789, -0.000123456789]])) == [[1.23457, -0.000123457]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(steps=0), "The embedding attack's steps must be positive and finite, got 0."),
        (dict(step_size=-0.5), "The embedding attack's step_size must be positive and finite, got -0.5."),
        (dict(step_size=float("inf")), "The embedding attack's step_size must be positive and finite, got inf."),
        (dict(suffix_length=0), "The embedding attack's suffix_length must be positive and finite, got 0."),
        (dict(optimiser="sgd"), "Unknown optimiser 'sgd'; choose one of sign, adam."),
    ],
)
def test_bad_budgets_are_one_sentence(options, message):
    with pytest.raises(SettingError) as error:
        EmbeddingAttack(**options)
    assert str(error.value) == message


def test_registered_and_built_by_the_attack_job():
    attack = build_attack("embedding", "harmbench", dtype="float32")
    assert (
        isinstance(attack, Attack)
        and isinstance(attack, EmbeddingAttack)
        and ATTACKS.get("embedding") is EmbeddingAttack
    )
