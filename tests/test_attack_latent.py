"""The latent attack on the toy refuser: a larger epsilon buys a lower target loss, no token's perturbation
exceeds its bound (epsilon times the median residual norm, measured here independently), the stored
perturbation gives back the final loss and acts on the prompt's pass only, and bad budgets are one sentence."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import data, generate
from mechrefusal.attack import build_attack
from mechrefusal.attacks import ATTACKS, Attack, Behaviour, target_losses
from mechrefusal.attacks.campaign import run_campaign
from mechrefusal.attacks.latent import LatentAttack, PerturbResidual, project
from mechrefusal.core.errors import SettingError
from tests.toy import COMPLIANCE

SMALL = dict(steps=30, dtype="float32", progress=False)


@pytest.fixture(scope="module")
def behaviour() -> Behaviour:
    return Behaviour(data.load("harmful", "train")[0], COMPLIANCE)


def residual_norms(toy, text: str, layer: int) -> torch.Tensor:
    """Norms of the block input at ``layer`` over the rendered prompt of ``text``, no perturbation."""
    seen = {}
    with (
        torch.no_grad(),
        toy.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_in", lambda a, hook: seen.setdefault(0, a))]),
    ):
        toy.bridge(toy.tokenize([text]).input_ids)
    return seen[0][0].norm(dim=-1)


def test_loss_falls_with_epsilon_within_the_bound(toy, behaviour):
    cases = {eps: LatentAttack(epsilon=eps, **SMALL).run(toy, behaviour)[0] for eps in (1e-4, 0.3, 1.0)}
    tiny, mid, large = (cases[eps].info for eps in (1e-4, 0.3, 1.0))
    assert tiny["loss"] == pytest.approx(tiny["initial_loss"], abs=1e-3)
    assert large["loss"] < mid["loss"] < tiny["loss"] and large["loss"] < 0.5 * tiny["loss"]
    norms = residual_norms(toy, behaviour.text, toy.n_layers // 2)
    for eps, case in cases.items():
        info = case.info
        assert info["epsilon"] == eps and info["layers"] == [toy.n_layers // 2]
        assert info["radius"] == [pytest.approx(eps * float(norms.median()), rel=1e-5)]
        per_token = torch.tensor(info["deltas"]).norm(dim=-1)
        assert per_token.shape == (1, len(norms))
        assert float(per_token.max()) <= info["radius"][0] * (1 + 1e-5)  # 6-digit rounding
        assert float(per_token.max()) == pytest.approx(info["radius"][0], rel=1e-5)  # PGD reaches the bound


def test_projection_is_a_known_answer():
    deltas = torch.tensor([[[3.0, 4.0], [0.3, 0.4]], [[0.0, 2.0], [0.0, 0.0]]])
    projected = project(deltas, torch.tensor([1.0, 3.0]))
    assert torch.allclose(projected, torch.tensor([[[0.6, 0.8], [0.3, 0.4]], [[0.0, 2.0], [0.0, 0.0]]]))


def test_stored_perturbation_gives_back_the_loss_at_two_layers(toy, behaviour):
    attack = LatentAttack(epsilon=0.5, layers=(3, 1), **SMALL)
    [case] = attack.run(toy, behaviour)
    assert case.info["layers"] == [3, 1] and len(case.info["radius"]) == 2
    [reloss] = target_losses(
        toy, [case.prompt], [behaviour.target], intervention=attack.generation_intervention(toy, case), dtype="float32"
    )
    assert float(reloss) == pytest.approx(case.info["loss"], abs=1e-5) and case.info["loss"] < case.info["initial_loss"]


def test_each_layer_gets_its_own_vectors_at_the_prompt_positions_only(toy, behaviour):
    """With layer 1's vectors zero, block 3's input moves by exactly layer 3's vectors on the prompt,
    in a left-padded row, and not at all on the reply's tokens."""
    ids = tuple(toy.chat.encode(toy.format([behaviour.text])[0]))
    delta = torch.randn(len(ids), toy.d_model, generator=torch.Generator().manual_seed(0))
    edit = PerturbResidual(ids, (3, 1), torch.stack([delta, torch.zeros_like(delta)]))
    batch = toy.tokenize_prompts([toy.format(["a much longer other prompt " * 3])[0], toy.format([behaviour.text])[0]])
    batch.input_ids = torch.cat([batch.input_ids, torch.tensor([[5, 6], [5, 6]])], dim=1)  # two reply tokens
    seen: list[torch.Tensor] = []
    capture = CaptureBlock3(seen)
    with torch.no_grad():
        for interventions in ([capture], [edit, capture]):
            with toy.intervene(*interventions):
                toy.bridge(batch.input_ids)
    difference = seen[1] - seen[0]
    start = batch.input_ids.shape[1] - 2 - len(ids)
    assert torch.allclose(difference[1, start : start + len(ids)], delta, atol=1e-5)
    assert difference[0].abs().max() == 0 and difference[1, :start].abs().max() == 0
    assert difference[1, -2:].abs().max() == 0


class CaptureBlock3:
    """Records block 3's input (after any perturbation there)."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def hooks(self, model):
        return [("blocks.3.hook_in", lambda activation, hook: self.seen.append(activation.clone()) or activation)]


def test_the_campaign_perturbs_the_prompt_pass_as_decoding_by_hand_does(toy, behaviour, tmp_path):
    attack = ATTACKS.get("latent").preset("cpu", epsilon=3.0, **SMALL)  # type: ignore[attr-defined]
    [outcome] = run_campaign(
        toy, {"latent": attack}, [behaviour], out=tmp_path, max_new_tokens=6, dtype="float32", progress=False
    ).outcomes
    [case], [completion] = outcome.cases, outcome.completions
    assert completion.startswith("Here is") and "cannot" in generate(toy, [case.prompt], max_new_tokens=6)[0]
    ids = toy.tokenize([case.prompt]).input_ids  # no KV cache: every pass holds the whole prompt
    with torch.no_grad(), toy.intervene(attack.generation_intervention(toy, case)):
        for _ in range(6):
            ids = torch.cat([ids, toy.bridge(ids)[:, -1:].argmax(-1)], dim=1)
    assert completion == toy.tokenizer.decode(ids[0, -6:], skip_special_tokens=True)


def test_deterministic_settings_and_caveat(toy, behaviour):
    attack = LatentAttack(**SMALL | dict(steps=3))
    assert attack.run(toy, behaviour, seed=0) == attack.run(toy, behaviour, seed=5)
    assert attack.settings() == dict(epsilon=0.1, steps=3, step_size=0.1, layers=None, dtype="float32")
    assert attack.caveat.startswith("epsilon is relative to the median residual norm")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(epsilon=0.0), "The latent attack's epsilon must be positive and finite, got 0.0."),
        (dict(epsilon=-1.0), "The latent attack's epsilon must be positive and finite, got -1.0."),
        (dict(epsilon=float("nan")), "The latent attack's epsilon must be positive and finite, got nan."),
        (dict(epsilon=float("inf")), "The latent attack's epsilon must be positive and finite, got inf."),
        (dict(step_size=float("nan")), "The latent attack's step_size must be positive and finite, got nan."),
        (dict(steps=0), "The latent attack's steps must be positive and finite, got 0."),
        (dict(layers=()), "The latent attack needs at least one layer to perturb (or None: the middle one)."),
    ],
)
def test_bad_budgets_are_one_sentence(options, message):
    with pytest.raises(SettingError) as error:
        LatentAttack(**options)
    assert str(error.value) == message


def test_a_layer_outside_the_model_is_one_sentence(toy, behaviour):
    with pytest.raises(SettingError, match=r"^Latent attack layers \[9\] are outside this model's blocks 0\.\.3\.$"):
        LatentAttack(layers=(9,), **SMALL).run(toy, behaviour)


def test_registered_and_built_by_the_attack_job():
    attack = build_attack("latent", "harmbench", dtype="float32")
    assert isinstance(attack, Attack) and isinstance(attack, LatentAttack) and ATTACKS.get("latent") is LatentAttack
