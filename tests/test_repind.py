"""Representational independence on the tiny model: known diagonal, gradients, clear errors."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import Direction, DirectionSet, MechrefusalError
from mechrefusal.directions.repind import default_layers, independence_shifts, last_token_cosines

PROMPTS = ["Hi", "Write a short poem about the sea", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def directions(tiny_model) -> DirectionSet:
    torch.manual_seed(5)
    return DirectionSet([Direction(torch.randn(tiny_model.d_model), 1, -1, "random") for _ in range(3)])


def test_ablating_a_direction_zeroes_its_own_cosine(tiny_model, directions):
    layers = default_layers(tiny_model)
    shifts = independence_shifts(tiny_model, PROMPTS, directions, batch_size=2)
    assert shifts.shape == (3, 3, len(layers))
    with torch.no_grad():
        base = last_token_cosines(tiny_model, tiny_model.tokenize(PROMPTS), directions.matrix, layers)
    # Ablation at each block input removes the direction there: the shift is the whole base cosine.
    torch.testing.assert_close(torch.diagonal(shifts).T, base.abs().mean(dim=0).T, atol=1e-5, rtol=0)
    off_diagonal = shifts[~torch.eye(3, dtype=torch.bool)]
    assert (off_diagonal >= 0).all() and off_diagonal.max() > 0  # random directions are not independent


def test_shift_between_orthogonal_directions_at_the_embedding_is_the_norm_change(tiny_model):
    """At layer 0 nothing has propagated yet: ablating u0 keeps x.u1 (u0 is orthogonal to u1) and only
    rescales |x|, so cos1 becomes cos1 / sqrt(1 - cos0^2)."""
    q, _ = torch.linalg.qr(torch.randn(tiny_model.d_model, 2, generator=torch.Generator().manual_seed(0)))
    pair = DirectionSet([Direction(q[:, 0], 0, -1, "random"), Direction(q[:, 1], 0, -1, "random")])
    shifts = independence_shifts(tiny_model, PROMPTS, pair, layers=[0])
    with torch.no_grad():
        cos = last_token_cosines(tiny_model, tiny_model.tokenize(PROMPTS), pair.matrix, [0])[:, 0]
    expected = (cos[:, 1] / (1 - cos[:, 0] ** 2).sqrt() - cos[:, 1]).abs().mean()
    torch.testing.assert_close(shifts[0, 1, 0], expected, atol=1e-5, rtol=1e-4)


def test_cosines_are_differentiable(tiny_model, directions):
    vectors = directions.matrix.clone().requires_grad_(True)
    cosines = last_token_cosines(tiny_model, tiny_model.tokenize(PROMPTS), vectors, [0, 1])
    cosines.square().sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0


def test_bad_inputs_are_clear_errors(tiny_model, directions):
    with pytest.raises(ValueError, match="at least one prompt"):
        independence_shifts(tiny_model, [], directions)
    with pytest.raises(MechrefusalError, match="width"):
        independence_shifts(tiny_model, PROMPTS, Direction(torch.ones(7), 0, -1, "random"))
