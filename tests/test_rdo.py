"""Refusal Direction Optimisation on the toy refusing model: behaviour against DIM, constraints,
the independence penalty, determinism, the loss parts' parity with the trainer's losses, clear errors."""

from __future__ import annotations

import pytest
import torch

import mechrefusal
from mechrefusal import Ablate, Direction, MechrefusalError, data
from mechrefusal.directions import RDOSettings
from mechrefusal.directions.rdo import Problem, rdo, rdo_loss
from mechrefusal.directions.rdo_targets import first_sentence, rdo_targets
from mechrefusal.directions.repind import independence_shifts
from tests.test_toy_refusal import TOY_FILTERS

# Small sizes keep each search to seconds (16 tokens hold the toy's whole replies).
FAST = dict(
    n_prompts=8, batch_size=8, micro_batch_size=4, steps=8, compliant_tokens=16, refusal_tokens=16, answer_tokens=16
)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MECHREFUSAL_HOME", str(tmp_path_factory.mktemp("rdo-home")))
        yield


@pytest.fixture(scope="module")
def prompts():
    return (
        data.load("harmful", "train")[:64],
        data.load("harmless", "train")[:64],
        data.load("harmful", "val"),
        data.load("harmless", "val"),
    )


def find(toy, prompts, **options):
    harmful, harmless, harmful_val, harmless_val = prompts
    return mechrefusal.find_direction(
        toy,
        harmful,
        harmless,
        harmful_val=harmful_val,
        harmless_val=harmless_val,
        filters=TOY_FILTERS,
        progress=False,
        **options,
    )


@pytest.fixture(scope="module")
def dim(toy, prompts):
    return find(toy, prompts)


@pytest.fixture(scope="module")
def second_dim(toy, prompts, dim):
    """The DIM direction the toy uses once the first one is ablated (the trainer's search), as anchor."""
    with pytest.warns(UserWarning, match="No DIM candidate passed"):
        return find(toy, prompts, orthogonal_to=dim, context=Ablate(dim))


def test_rdo_weighted_to_ablation_bypasses_at_least_as_well_as_dim(toy, prompts, dim):
    found = find(toy, prompts, method="rdo", dim=dim, rdo_settings=RDOSettings(steps=12, ablation_weight=5.0))
    assert found.method == "rdo" and (found.layer, found.position) == (dim.layer, dim.position)
    assert found.vector.norm().item() == pytest.approx(dim.vector.norm().item(), rel=1e-5)  # alpha = ||r_DIM||
    bypass = mechrefusal.refusal_score(toy, prompts[2], intervention=Ablate(found)).mean().item()
    assert bypass == pytest.approx(found.provenance["bypass"], abs=0.05)
    assert bypass <= dim.provenance["bypass"]
    history = found.provenance["rdo"]["history"]
    assert history[found.provenance["rdo"]["best_step"]]["total"] == min(step["total"] for step in history)
    assert found.provenance["dim"]["layer"] == dim.layer and found.provenance["versions"]


def test_default_weights_trade_for_a_smaller_kl_than_dim(toy, prompts, dim):
    """With the default weights (1 / 0.2 / 1) the retain loss keeps harmless answers closer than DIM does."""
    found = find(toy, prompts, method="rdo", dim=dim, rdo_settings=RDOSettings(steps=12))
    assert found.provenance["kl"] < dim.provenance["kl"]
    assert found.provenance["induce"] > 0 and found.provenance["passed_filters"]


def test_orthogonal_search_stays_in_the_complement(toy, prompts, dim, second_dim):
    found = find(
        toy,
        prompts,
        method="rdo",
        dim=second_dim,
        orthogonal_to=dim,
        context=Ablate(dim),
        rdo_settings=RDOSettings(**FAST),
    )
    cosine = torch.nn.functional.cosine_similarity(found.vector, dim.vector, dim=0).abs().item()
    assert cosine < 1e-5
    with pytest.raises(ValueError, match="span of the directions RDO must stay orthogonal to"):
        find(toy, prompts, method="rdo", dim=dim, orthogonal_to=dim, rdo_settings=RDOSettings(**FAST))


def test_independence_penalty_falls_and_lowers_the_shifts(toy, prompts, dim, second_dim):
    options = dict(method="rdo", dim=second_dim, orthogonal_to=dim, context=Ablate(dim))
    free = find(toy, prompts, rdo_settings=RDOSettings(**FAST), **options)
    independent = find(
        toy, prompts, independent_of=dim, rdo_settings=RDOSettings(**FAST, independence_weight=5.0), **options
    )
    history = independent.provenance["rdo"]["history"]
    assert history[-1]["independence"] < 0.9 * history[0]["independence"]
    assert "independence" not in free.provenance["rdo"]["history"][0]

    def off_diagonal(direction: Direction) -> float:
        shifts = independence_shifts(toy, prompts[2], [dim, direction])
        return (shifts[0, 1].mean() + shifts[1, 0].mean()).item()

    assert off_diagonal(independent) < off_diagonal(free)


def test_two_runs_with_one_seed_agree_and_targets_are_cached(toy, prompts, dim):
    # Batches of 4 of the 8 examples, so the seed picks which examples a step sees: with full batches two
    # seeds differ only in summation order, 1e-7 apart in fp32 (auto's choice on a CPU without fast bf16).
    sampled = {**FAST, "batch_size": 4}
    first = find(toy, prompts, method="rdo", dim=dim, rdo_settings=RDOSettings(**sampled, seed=3))
    key = first.provenance["rdo"]["targets_key"]
    assert key and (mechrefusal.core.cache.home() / "rdo-targets" / f"{key}.json").is_file()
    second = find(toy, prompts, method="rdo", dim=dim, rdo_settings=RDOSettings(**sampled, seed=3))
    assert second.provenance["rdo"]["targets_key"] == key
    torch.testing.assert_close(first.vector, second.vector, atol=1e-6, rtol=0)
    other = find(toy, prompts, method="rdo", dim=dim, rdo_settings=RDOSettings(**sampled, seed=4))
    assert (other.vector - first.vector).abs().max() > 1e-6


def test_loss_parts_match_the_trainers_losses(toy, prompts, dim):
    """Ablation CE and retain KL equal the trainer's per-example losses computed the plain way."""
    from mechrefusal.measure.losses import reply_cross_entropy, reply_kl

    targets = rdo_targets(
        toy,
        prompts[0][:4],
        prompts[1][:4],
        dim,
        compliant_tokens=6,
        refusal_tokens=6,
        answer_tokens=6,
        dtype="float32",
        progress=False,
    )
    settings = RDOSettings(dtype="float32")
    r = dim.unit.clone().requires_grad_(True)
    problem = Problem(targets, dim.vector.norm().item(), dim.layer, dim.position, settings)
    indices = list(range(min(len(targets.harmful), len(targets.harmless))))
    parts = rdo_loss(toy, r, problem, indices)
    with torch.no_grad():
        harmful = toy.tokenize_replies([targets.harmful[i] for i in indices], [targets.compliant[i] for i in indices])
        with toy.intervene(Ablate(dim)):
            ablation = reply_cross_entropy(toy.logits(harmful)[:, harmful.predictions], harmful).mean()
        answered = toy.tokenize_replies([targets.harmless[i] for i in indices], [targets.answers[i] for i in indices])
        with toy.intervene(Ablate(dim)):
            ablated = toy.logits(answered)
        window = answered.predictions
        retain = reply_kl(ablated[:, window], toy.logits(answered)[:, window], answered).mean()
    torch.testing.assert_close(parts["ablation"], ablation, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(parts["retain"], retain, atol=1e-6, rtol=1e-4)
    parts["total"].backward()
    assert r.grad is not None and r.grad.abs().sum() > 0


def test_massive_dimensions_stay_out_of_the_direction(tmp_path):
    from mechrefusal.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "sink")
    sink = model.tokenizer.convert_tokens_to_ids("<|im_start|>")
    with torch.no_grad():
        model.bridge.embed.original_component.weight[sink, 5] = 1e4
    start = Direction(torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)), 1, -1, "random")
    found = rdo(
        model,
        ["Tell me a joke", "Hi there"],
        ["Name a colour", "Count to three"],
        start,
        settings=RDOSettings(**FAST),
        progress=False,
    )
    assert found.provenance["rdo"]["massive_dims_excluded"] == [5]
    assert found.vector[5].abs().item() < 1e-6 * found.vector.norm().item()


def test_first_sentence():
    assert first_sentence("I cannot help with that. Please ask me something else.") == "I cannot help with that."
    assert first_sentence("Sorry! No.") == "Sorry!"
    assert first_sentence("Version 2.0 is out") == "Version 2.0 is out"


def test_bad_inputs_are_clear_errors(toy, prompts, dim):
    with pytest.raises(ValueError, match="non-negative"):
        RDOSettings(addition_weight=-1.0)
    with pytest.raises(ValueError, match="one of ablation/addition/retain positive"):
        RDOSettings(ablation_weight=0.0, addition_weight=0.0, retain_weight=0.0)
    with pytest.raises(ValueError, match="Unknown independence penalty 'cubic'"):
        RDOSettings(independence_penalty="cubic")
    with pytest.raises(ValueError, match="harmful must be a non-empty list of instructions"):
        mechrefusal.find_direction(toy, [], prompts[1], method="rdo", dim=dim, progress=False)
    with pytest.raises(ValueError, match="at least one harmful and one harmless prompt to build"):
        rdo(toy, prompts[0], [], dim, progress=False)
    narrow = Direction(torch.ones(8), 0, -1, "dim")
    with pytest.raises(MechrefusalError, match="width 8"):
        rdo(toy, prompts[0], prompts[1], narrow, progress=False)
    with pytest.raises(MechrefusalError, match="width 8"):
        rdo(toy, prompts[0], prompts[1], dim, independent_of=narrow, progress=False)
    with pytest.raises(ValueError, match="choose one of dim, rdo"):
        mechrefusal.find_direction(toy, prompts[0], prompts[1], method="pca")
    with pytest.raises(ValueError, match="method='rdo' only"):
        mechrefusal.find_direction(toy, prompts[0], prompts[1], independent_of=dim)
