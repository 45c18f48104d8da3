"""Interventions on the residual stream, applied as scoped forward hooks.

>>> with model.intervene(Ablate(directions), Add(direction, coeff=1.0)):
...     logits = model.logits(batch)

The hooks fire on every forward pass inside the block (batched runs, generation steps, backward
passes) and only the hooks added by the block are removed when it exits, even on an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.models import Model
from mechrefusal.models.hooks import Hook, Intervention, Interventions, flatten

# Every place a block reads from or writes into the residual stream.
ABLATION_SITES = ("blocks.{layer}.hook_in", "blocks.{layer}.attn.hook_out", "blocks.{layer}.mlp.hook_out")
POST_NORM_SITES = ("blocks.{layer}.hook_in", "blocks.{layer}.ln1_post.hook_out", "blocks.{layer}.ln2_post.hook_out")
"""Gemma-2/3 normalise the attention and MLP outputs before adding them, and a norm's gains would put an
ablated direction back: there the writes into the residual stream are the norms' outputs."""


def ablation_sites(model: Model) -> tuple[str, ...]:
    """Every place a block of ``model`` reads from or writes into the residual stream (``{layer}`` patterns)."""
    return POST_NORM_SITES if "blocks.0.ln1_post.hook_out" in model.bridge.hook_dict else ABLATION_SITES


@dataclass(frozen=True)
class Ablate:
    """Project the span of ``directions`` out of the residual stream: ``h <- h - Q Q^T h``.

    Applied at the block input, attention output and MLP output of every layer (or of ``layers``), at
    every position.
    """

    directions: Direction | DirectionSet | Sequence[Direction]
    layers: Sequence[int] | None = None

    def hooks(self, model: Model) -> list[Hook]:
        basis = _basis(self.directions, model)

        def ablate(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            q = basis.to(activation.dtype)
            return activation - (activation @ q) @ q.T

        layers = range(model.n_layers) if self.layers is None else _checked_layers(self.layers, model)
        return [(site.format(layer=layer), ablate) for layer in layers for site in ablation_sites(model)]


@dataclass(frozen=True)
class RandomAblate:
    """DeepRefusal's partial ablation: each site (block input, attention output, MLP output of each
    layer) is ablated with probability ``p`` on each forward pass, and then only at token positions
    drawn with probability ``p`` each. ``generator`` (a CPU generator, so the draws are the same on every
    device) makes them reproducible."""

    directions: Direction | DirectionSet | Sequence[Direction]
    p: float
    generator: torch.Generator

    def hooks(self, model: Model) -> list[Hook]:
        basis = _basis(self.directions, model)

        def maybe_ablate(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            if torch.rand((), generator=self.generator).item() >= self.p:
                return activation
            positions = torch.rand(activation.shape[:2], generator=self.generator) < self.p
            q = basis.to(activation.dtype)
            projection = (activation @ q) @ q.T
            return activation - projection * positions.to(activation.device, activation.dtype).unsqueeze(-1)

        return [
            (site.format(layer=layer), maybe_ablate)
            for layer in range(model.n_layers)
            for site in ablation_sites(model)
        ]


def _basis(directions: Direction | DirectionSet | Sequence[Direction], model: Model) -> Float[Tensor, "d_model k"]:
    directions = as_direction_set(directions)
    if not len(directions):
        raise SettingError("An ablation needs at least one direction; this set is empty.")
    directions.check_width(model.d_model)
    return directions.basis().to(model.device)


def _checked_layers(layers: Sequence[int], model: Model) -> Sequence[int]:
    outside = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if outside:
        raise SettingError(
            f"Layers {outside} are outside this model's blocks 0..{model.n_layers - 1}: "
            "the direction or layer list was made for a deeper model."
        )
    return layers


@dataclass(frozen=True)
class Add:
    """Add ``coeff * direction.vector`` (raw, not normalised) to the input of the direction's layer."""

    direction: Direction
    coeff: float = 1.0

    def hooks(self, model: Model) -> list[Hook]:
        DirectionSet([self.direction]).check_width(model.d_model)
        (layer,) = _checked_layers([self.direction.layer], model)
        shift = (self.coeff * self.direction.vector).to(model.device)

        def add(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            return activation + shift.to(activation.dtype)

        return [(f"blocks.{layer}.hook_in", add)]


@dataclass(frozen=True)
class OnRows:
    """``intervention`` applied to the batch rows ``rows`` only, so that examples under different
    interventions share one forward pass (the trainer's mixed ablated and plain examples)."""

    intervention: Intervention
    rows: tuple[int, ...]

    def hooks(self, model: Model) -> list[Hook]:
        rows = torch.tensor(self.rows, dtype=torch.long)

        def on_rows(apply: Callable) -> Callable:
            def masked(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
                chosen = torch.zeros(activation.shape[0], dtype=torch.bool, device=activation.device)
                chosen[rows.to(activation.device)] = True
                return torch.where(chosen[:, None, None], apply(activation, hook), activation)

            return masked

        return [(name, on_rows(apply)) for name, apply in self.intervention.hooks(model)]


def uniform(*interventions: Interventions) -> bool:
    """Whether the interventions act alike in every row and at every position (`Ablate`, `Add`; none at
    all): rows that begin with the same tokens then have the same activations there, which a shared prompt
    prefix run once relies on."""
    return all(type(item) in (Ablate, Add) for item in flatten(*interventions))  # a subclass may act per position


def per_row(groups: Sequence[tuple[Sequence[int], Interventions]]) -> list[Intervention]:
    """The interventions of a batch whose rows are the groups' examples in order, each group under its
    own interventions; a group that holds every row needs no mask (and draws RandomAblate's positions
    as it would alone)."""
    n = sum(len(indices) for indices, _ in groups)
    flat: list[Intervention] = []
    start = 0
    for indices, interventions in groups:
        rows = tuple(range(start, start + len(indices)))
        start += len(indices)
        flat += [item if len(rows) == n else OnRows(item, rows) for item in flatten(interventions)]
    return flat
