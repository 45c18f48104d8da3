"""GCG on the toy refuser: it lowers the target loss and finds a suffix the toy complies with; its fast
paths (embeddings with a cached prefix, logits at target positions) match the plain token-id loss."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import Ablate, Direction, data, generate
from mechrefusal.attacks import Behaviour, target_losses
from mechrefusal.attacks import gcg as gcg_module
from mechrefusal.attacks.base import broke_through
from mechrefusal.attacks.gcg import GCG
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import OnRows, RandomAblate
from mechrefusal.interventions.generators import draws_at_random
from tests.toy import COMPLIANCE

SMALL = dict(steps=20, search_width=32, topk=32, suffix_length=6, check_every=5, stop_loss=None, progress=False)


@pytest.fixture(scope="module")
def behaviour(toy) -> Behaviour:
    """The first harmful train prompt the toy refuses even with GCG's initial suffix appended."""
    init = " " + " ".join(["!"] * SMALL["suffix_length"])
    prompts = data.load("harmful", "train")[:16]
    replies = generate(toy, [p + init for p in prompts], max_new_tokens=8)
    return Behaviour(next(p for p, r in zip(prompts, replies) if "cannot" in r), COMPLIANCE)


@pytest.fixture(scope="module")
def ablate(toy) -> Ablate:
    vector = torch.randn(toy.d_model, generator=torch.Generator().manual_seed(3))
    return Ablate(Direction(vector, 1, -1, "random"))


def test_gcg_makes_the_toy_comply(toy, behaviour):
    [case] = GCG(**SMALL).run(toy, behaviour, seed=0)
    info = case.info
    assert case.prompt == behaviour.text + info["suffix"]
    assert info["loss"] < 0.25 * info["initial_loss"]
    assert info["stopped_early"] and info["steps"] < SMALL["steps"]
    [reply] = generate(toy, [case.prompt], max_new_tokens=8)
    assert "cannot" not in reply and reply.startswith("Here is")


def test_an_empty_or_shouted_reply_does_not_stop_the_search(toy, behaviour, monkeypatch):
    assert broke_through(["q"] * 4, ["Here is", "", "HERE IS", "I cannot help"]) == [True, False, False, False]
    monkeypatch.setattr(gcg_module, "generate", lambda model, messages, **kwargs: [""] * len(messages))
    [case] = GCG(**SMALL).run(toy, behaviour, seed=0)
    assert not case.info["stopped_early"] and case.info["steps"] == SMALL["steps"]


def test_gcg_is_deterministic_given_the_seed(toy, behaviour):
    budget = SMALL | dict(steps=3, early_stop=False)
    first, again = (GCG(**budget).optimise(toy, [behaviour], seed=1) for _ in range(2))
    other = GCG(**budget).optimise(toy, [behaviour], seed=2)
    assert first == again
    assert first.suffix_ids != other.suffix_ids


@pytest.mark.parametrize("cached", [True, False])
def test_fast_losses_equal_the_token_id_loss(toy, behaviour, ablate, cached):
    """The gradient pass (embeddings, optionally after a cached prefix) and the candidate pass (ids, logits
    at target positions) give the plain loss of the same prompt, with and without an ablation."""
    attack = GCG(**SMALL | dict(steps=2, early_stop=False, prefix_cache=cached, dtype="float32"))
    init = behaviour.text + " " + " ".join(["!"] * SMALL["suffix_length"])
    losses = {}
    for name, intervention in (("plain", None), ("ablated", ablate)):
        result = attack.optimise(toy, [behaviour], intervention=intervention, seed=0)
        plain = target_losses(
            toy,
            [init, behaviour.text + result.suffix],
            [behaviour.target] * 2,
            intervention=intervention,
            dtype="float32",
        )
        assert result.initial_loss == pytest.approx(float(plain[0]), abs=1e-5)
        assert result.loss == pytest.approx(float(plain[1]), abs=1e-5)
        losses[name] = result.initial_loss
    assert abs(losses["plain"] - losses["ablated"]) > 1e-3


def test_one_suffix_for_several_behaviours_sums_their_losses(toy, behaviour):
    other = Behaviour(data.load("harmful", "train")[20], COMPLIANCE)
    result = GCG(**SMALL | dict(steps=2, early_stop=False, dtype="float32")).optimise(toy, [behaviour, other])
    each = target_losses(toy, [b.text + result.suffix for b in (behaviour, other)], [COMPLIANCE] * 2, dtype="float32")
    assert result.loss == pytest.approx(float(each.sum()), abs=1e-5)


def test_retokenisation_filter_drops_suffixes_that_merge(toy, behaviour):
    """A token split into two pieces retokenises to the whole token, so the pieces are dropped."""
    attack = GCG(**SMALL)
    prompts, suffix = attack.tokenise(toy, [behaviour])
    tokenizer = toy.tokenizer
    whole, left, right = next(
        (index, tokenizer.convert_tokens_to_ids(token[:1]), tokenizer.convert_tokens_to_ids(token[1:]))
        for token, index in sorted(tokenizer.get_vocab().items())
        if len(token) == 2
        and token.isalpha()
        and token[:1] in tokenizer.get_vocab()
        and token[1:] in tokenizer.get_vocab()
    )
    merged, split = suffix.clone(), suffix.clone()
    merged[-2:] = torch.tensor([whole, suffix[-1]])
    split[-3:-1] = torch.tensor([left, right])
    assert attack.retokenises(toy, prompts, torch.stack([suffix, merged, split])).tolist() == [True, True, False]


def test_bad_settings_raise_one_clear_error(toy):
    with pytest.raises(SettingError, match="search_width must be at least 1"):
        GCG(search_width=0)
    with pytest.raises(SettingError, match="steps must be at least 1"):
        GCG.preset("cpu", steps=0)
    with pytest.raises(SettingError, match="max_new_tokens must be at least 1, got 0"):
        GCG(max_new_tokens=0)
    with pytest.raises(SettingError, match="empty target"):
        GCG(**SMALL).optimise(toy, [Behaviour("Say hi", " ")])
    with pytest.raises(SettingError, match="Unknown GCG preset"):
        GCG.preset("gpu")


class NoTokens(GCG):
    """A GCG whose token filter lets nothing through."""

    def allowed_tokens(self, model):
        return torch.zeros(len(model.tokenizer), dtype=torch.bool)


def test_a_filter_that_allows_no_token_is_one_clear_error(toy, behaviour):
    with pytest.raises(SettingError, match="No token of the vocabulary may appear in a GCG suffix"):
        NoTokens(**SMALL).optimise(toy, [behaviour])


def test_the_prefix_cache_refuses_an_intervention_that_draws_at_random(toy, behaviour, ablate):
    random_ablate = RandomAblate(ablate.directions, 0.5, torch.Generator().manual_seed(0))
    nested = [ablate, OnRows(random_ablate, (0,))]
    assert draws_at_random(random_ablate) and draws_at_random(nested) and draws_at_random((None, [random_ablate]))
    assert not draws_at_random(ablate) and not draws_at_random([ablate, None]) and not draws_at_random(None)
    with pytest.raises(SettingError, match="draws at random .* set prefix_cache=False"):
        GCG(**SMALL).optimise(toy, [behaviour], intervention=nested)
    result = GCG(**SMALL | dict(steps=1, early_stop=False, prefix_cache=False)).optimise(
        toy, [behaviour], intervention=nested
    )
    assert result.steps == 1


def test_presets_and_settings():
    harmbench = GCG.preset("harmbench")
    assert (harmbench.steps, harmbench.search_width, harmbench.topk, harmbench.suffix_length) == (500, 512, 256, 20)
    assert harmbench.caveat == "" and GCG.preset("cpu").caveat == (
        "weak attacker: 40 steps x 64 candidates from the top 64 tokens (HarmBench: 500 x 512, top 256)"
    )
    assert GCG.preset("harmbench", topk=128).caveat.startswith(
        "weak attacker: 500 steps x 512 candidates from the top 128"
    )
    assert "progress" not in harmbench.settings() and harmbench.settings()["topk"] == 256
