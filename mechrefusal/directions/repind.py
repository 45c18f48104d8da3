"""Representational independence (docs/method.md §2.8): does ablating one direction change how strongly the
activations point along another?

Directions ``r`` and ``v`` are representationally independent when ablating ``r`` leaves the per-layer
cosine between the last-token residual stream and ``v`` unchanged, and vice versa. `last_token_cosines`
is the measurement (differentiable, so RDO can penalise it); `independence_shifts` is the matrix the
analysis reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import Ablate
from mechrefusal.models import Batch, Model

# Layers read by default: those below 90% of the depth (the last layers only format the output).
DEPTH_FRACTION = 0.9


def default_layers(model: Model) -> list[int]:
    """The layers below ``DEPTH_FRACTION`` of the model's depth."""
    return list(range(max(1, int(DEPTH_FRACTION * model.n_layers))))


def last_token_cosines(
    model: Model, batch: Batch, vectors: Float[Tensor, "k d_model"], layers: Sequence[int]
) -> Float[Tensor, "batch layer k"]:
    """Cosine between the residual stream entering each of ``layers`` at the last prompt token (the last
    attended position, so left- and right-padded batches both work) and each vector, under whatever
    interventions are active. Gradients flow when the caller enables them."""
    units = vectors / vectors.norm(dim=-1, keepdim=True)
    read: dict[int, Tensor] = {}
    rows = torch.arange(len(batch), device=batch.input_ids.device)
    last = batch.attention_mask.shape[1] - 1 - batch.attention_mask.flip(1).argmax(dim=1)

    def store(layer: int):
        def hook(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            read[layer] = activation[rows, last]
            return activation

        return hook

    hooks = [(f"blocks.{layer}.hook_in", store(layer)) for layer in layers]
    with model.bridge.hooks(fwd_hooks=hooks):
        model.bridge(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=max(layers))
    stacked = torch.stack([read[layer] for layer in layers], dim=1).float()
    return (stacked / stacked.norm(dim=-1, keepdim=True)) @ units.to(stacked.device, stacked.dtype).T


def independence_shifts(
    model: Model,
    prompts: Sequence[str],
    directions: Direction | DirectionSet | Sequence[Direction],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
) -> Float[Tensor, "ablated measured layer"]:
    """``shifts[i, j, l]``: mean over ``prompts`` of |cos(x_l, d_j) with d_i ablated - cos(x_l, d_j)|
    at the last prompt token, for each layer ``l`` of ``layers`` (default: below 90% depth).

    The diagonal is how much of each direction the activations carry (ablation zeroes it); off the
    diagonal, zero means representationally independent.
    """
    directions = as_direction_set(directions)
    directions.check_width(model.d_model)
    if not prompts:
        raise SettingError("independence_shifts needs at least one prompt.")
    layers = list(default_layers(model) if layers is None else layers)
    vectors = directions.matrix
    shifts = torch.zeros(len(directions), len(directions), len(layers))
    with torch.no_grad():
        for _, batch in model.batches(prompts, batch_size):
            base = last_token_cosines(model, batch, vectors, layers)
            for i, direction in enumerate(directions):
                with model.intervene(Ablate(direction)):
                    ablated = last_token_cosines(model, batch, vectors, layers)
                shifts[i] += (ablated - base).abs().sum(dim=0).T.cpu()
    return shifts / len(prompts)
