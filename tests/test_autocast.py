"""`autocast` runs each linear layer on one kept low-precision cast of its weight where no gradient flows to
it: the same numbers as torch.autocast casting at every call, a fresh cast once the weight changes,
gradients where they are asked for, float32 where autocast is switched off inside."""

from __future__ import annotations

import sys

import pytest
import torch

from mechrefusal.models import autocast
from mechrefusal.models.tiny import build_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:.*bf16:UserWarning")  # asked bf16 on a CPU where it is slow
KEPT = sys.modules["mechrefusal.models.autocast"]._KEPT


@pytest.fixture
def model(tmp_path):
    """A tiny Llama of its own (these tests change its weights)."""
    return build_tiny_model(tmp_path)


def ids(model) -> torch.Tensor:
    return model.tokenizer(["How do magnets work? Tell me about the poles."], return_tensors="pt").input_ids


def every_call(model, tokens) -> torch.Tensor:
    """Logits under torch.autocast alone, which casts each weight at every call."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model.bridge(tokens).float()


def kept(model, tokens) -> torch.Tensor:
    with autocast(model, "bfloat16"):
        return model.bridge(tokens).float()


def linears(model) -> list[torch.nn.Linear]:
    return [module for module in model.hf_model.modules() if type(module) is torch.nn.Linear]


def freeze(model) -> None:
    for parameter in model.hf_model.parameters():
        parameter.requires_grad_(False)


def test_a_frozen_model_gives_autocasts_numbers_on_casts_kept_between_contexts(model):
    freeze(model)
    tokens = ids(model)
    first = kept(model, tokens)
    torch.testing.assert_close(first, every_call(model, tokens), atol=0, rtol=0)
    casts = {id(linear): KEPT[linear].weight for linear in linears(model)}
    assert casts and all(cast.dtype == torch.bfloat16 for cast in casts.values())
    torch.testing.assert_close(kept(model, tokens), first, atol=0, rtol=0)
    assert all(KEPT[linear].weight is casts[id(linear)] for linear in linears(model))  # not cast again
    assert all("forward" not in vars(linear) for linear in linears(model))  # the layers are themselves again


def test_a_weight_changed_in_place_is_cast_again(model):
    freeze(model)
    tokens = ids(model)
    before = kept(model, tokens)
    with torch.no_grad():
        linears(model)[0].weight.mul_(3.0)  # an optimiser step or a loaded checkpoint does the same
    after = kept(model, tokens)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, every_call(model, tokens), atol=0, rtol=0)


def test_weights_that_require_grad_get_autocasts_gradients(model):
    tokens = ids(model)
    gradients = []
    for forward in (every_call, kept):
        model.hf_model.zero_grad(set_to_none=True)
        forward(model, tokens).logsumexp(dim=-1).sum().backward()
        gradients.append([linear.weight.grad for linear in linears(model)])
    assert all(grad is not None for grad in gradients[1])
    for ours, theirs in zip(*gradients):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_no_grad_inference_of_a_trainable_model_uses_the_kept_casts(model):
    tokens = ids(model)
    with torch.no_grad():
        torch.testing.assert_close(kept(model, tokens), every_call(model, tokens), atol=0, rtol=0)
    assert all(linear in KEPT for linear in linears(model))


def test_autocast_switched_off_inside_runs_in_float32(model):
    freeze(model)
    tokens = ids(model)
    with torch.no_grad():
        float32 = model.bridge(tokens)
        with autocast(model, "bfloat16"), torch.autocast("cpu", enabled=False):
            inside = model.bridge(tokens)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, float32, atol=0, rtol=0)
