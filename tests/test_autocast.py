"""`cast_once` (inside every `autocast` on a CPU, and held by the trainer for a round) runs each frozen
linear layer on one cast of its weight per context: the same numbers as torch.autocast casting at every
call, a fresh cast once the weight changes, the usual path for weights that require grad, float32 where
autocast is switched off inside, and a bit-identical bf16 training run."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch

import mechrefusal
from mechrefusal.models import autocast
from mechrefusal.models.export import hf_state_dict
from mechrefusal.models.tiny import build_tiny_model
from mechrefusal.train import run
from tests.test_train import toy_settings

pytestmark = pytest.mark.filterwarnings("ignore:.*bf16:UserWarning")  # asked bf16 on a CPU where it is slow
CASTING = sys.modules["mechrefusal.models.autocast"]
LOOP = sys.modules["mechrefusal.train.loop"]


@pytest.fixture
def model(tmp_path):
    """A tiny Llama of its own (these tests change its weights)."""
    return build_tiny_model(tmp_path)


def ids(model) -> torch.Tensor:
    return model.tokenizer(["How do magnets work? Tell me about the poles."], return_tensors="pt").input_ids


def every_call(model, tokens) -> torch.Tensor:
    """Logits under torch.autocast alone, which casts each frozen weight at every call."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model.bridge(tokens).float()


def once(model, tokens) -> torch.Tensor:
    with autocast(model, "bfloat16"):
        return model.bridge(tokens).float()


def linears(model) -> list[torch.nn.Linear]:
    return [module for module in model.hf_model.modules() if type(module) is torch.nn.Linear]


def test_a_frozen_model_runs_on_one_cast_per_context_with_autocasts_numbers(model):
    model.bridge.requires_grad_(False)
    tokens = ids(model)
    with autocast(model, "bfloat16"):
        first = model.bridge(tokens).float()
        casts = CASTING._SCOPES[model.hf_model]
        made = {linear: cast.weight for linear, cast in casts.items()}
        assert set(made) == set(linears(model)) and all(w.dtype == torch.bfloat16 for w in made.values())
        second = model.bridge(tokens).float()
        assert all(casts[linear].weight is weight for linear, weight in made.items())  # not cast again
        x = torch.randn(3, linears(model)[0].in_features)
        assert torch.equal(linears(model)[0](input=x), linears(model)[0](x))  # called as nn.Linear is
    torch.testing.assert_close(first, every_call(model, tokens), atol=0, rtol=0)
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    assert model.hf_model not in CASTING._SCOPES  # the casts are dropped with the context
    assert all("forward" not in vars(linear) for linear in linears(model))  # the layers are themselves again


def test_a_weight_changed_in_place_inside_a_context_is_cast_again(model):
    model.bridge.requires_grad_(False)
    tokens = ids(model)
    with autocast(model, "bfloat16"):
        before = model.bridge(tokens).float()
        with torch.no_grad():
            linears(model)[0].weight.mul_(3.0)
        after = model.bridge(tokens).float()
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, every_call(model, tokens), atol=0, rtol=0)


def test_weights_that_require_grad_take_autocasts_path_and_get_its_gradients(model):
    tokens = ids(model)
    gradients = []
    for forward in (every_call, once):
        model.hf_model.zero_grad(set_to_none=True)
        forward(model, tokens).logsumexp(dim=-1).sum().backward()
        gradients.append([linear.weight.grad for linear in linears(model)])
    assert all(grad is not None for grad in gradients[1])
    for ours, theirs in zip(*gradients):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_autocast_switched_off_inside_runs_in_float32(model):
    model.bridge.requires_grad_(False)
    tokens = ids(model)
    with torch.no_grad():
        float32 = model.bridge(tokens)
        with autocast(model, "bfloat16"), torch.autocast("cpu", enabled=False):
            inside = model.bridge(tokens)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, float32, atol=0, rtol=0)


def test_a_bf16_training_round_is_bit_identical_with_casts_kept(toy_dir, tmp_path, monkeypatch):
    """The trainer holds `cast_once` for the round (frozen layer 0, the unembedding, the reference model)."""
    settings = toy_settings(
        toy_dir, tmp_path / "once", method="sft", steps=3, n_examples=24, evals_per_round=1, dtype="bfloat16"
    )
    settings = replace(settings, rounds=0, train_layers="1:2")
    run(settings, progress=False)
    with monkeypatch.context() as every:
        for module in (CASTING, LOOP):
            every.setattr(module, "cast_once", lambda model: nullcontext())
        run(replace(settings, out=str(tmp_path / "every")), progress=False)
    kept, plain = (
        hf_state_dict(mechrefusal.load(tmp_path / way / "round-0", device="cpu")) for way in ("once", "every")
    )
    original = hf_state_dict(mechrefusal.load(toy_dir, device="cpu"))
    assert any(not torch.equal(kept[name], original[name]) for name in kept)  # training moved the weights
    for name in kept:
        assert torch.equal(kept[name], plain[name]), name
    losses = [
        json.loads((tmp_path / way / "round-0" / "mechrefusal.json").read_text())["metrics"]["training"]["train_loss"]
        for way in ("once", "every")
    ]
    assert losses[0] == losses[1]
