"""Interventions on the residual stream, applied as scoped forward hooks.

>>> with model.intervene(Ablate(directions), Add(direction, coeff=1.0)):
...     logits = model.logits(batch)

The hooks fire on every forward pass inside the block (batched runs, generation steps, backward
passes) and only the hooks added by the block are removed when it exits, even on an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from mechrefusal.directions.direction import Direction, DirectionSet, as_direction_set

Hook = tuple[str, Callable]

# Every place a block reads from or writes into the residual stream.
ABLATION_SITES = ("blocks.{layer}.hook_in", "blocks.{layer}.attn.hook_out", "blocks.{layer}.mlp.hook_out")


@dataclass(frozen=True)
class Ablate:
    """Project the span of ``directions`` out of the residual stream: ``h <- h - Q Q^T h``.

    Applied at every layer's block input, attention output and MLP output, at every position.
    """

    directions: Direction | DirectionSet | Sequence[Direction]

    def hooks(self, model) -> list[Hook]:
        directions = as_direction_set(self.directions)
        directions.check_width(model.d_model)
        basis = directions.basis().to(model.device)

        def ablate(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            q = basis.to(activation.dtype)
            return activation - (activation @ q) @ q.T

        return [(site.format(layer=layer), ablate) for layer in range(model.n_layers) for site in ABLATION_SITES]


@dataclass(frozen=True)
class Add:
    """Add ``coeff * direction.vector`` (raw, not normalised) to the input of the direction's layer."""

    direction: Direction
    coeff: float = 1.0

    def hooks(self, model) -> list[Hook]:
        DirectionSet([self.direction]).check_width(model.d_model)
        shift = (self.coeff * self.direction.vector).to(model.device)

        def add(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            return activation + shift.to(activation.dtype)

        return [(f"blocks.{self.direction.layer}.hook_in", add)]


Intervention = Ablate | Add
Interventions = Intervention | Sequence[Intervention] | None


@contextmanager
def intervene(model, *interventions: Interventions) -> Iterator[None]:
    """Apply interventions for the duration of the block (``None`` entries are skipped, lists flattened)."""
    flat = []
    for item in interventions:
        flat.extend(item if isinstance(item, (list, tuple)) else [] if item is None else [item])
    hooks = [hook for intervention in flat for hook in intervention.hooks(model)]
    with model.bridge.hooks(fwd_hooks=hooks):
        yield

