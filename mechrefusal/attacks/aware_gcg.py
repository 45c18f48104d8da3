"""Direction-aware GCG: GCG whose loss also penalises the residual stream's projections onto the defence's
saved directions.

The loss of a suffix is its target loss plus ``weight`` times the sum, over the saved directions and the
post-instruction positions (the chat template's tail after the suffix), of the squared projection of the
residual stream at the direction's layer (its block input, ``blocks.{layer}.hook_in``) onto the unit
direction: an attacker who knows which directions a defence reads refusal from steers the activations
off them while forcing the target. Everything else (sampling, the retokenisation filter, the prefix
cache, early stop) is GCG's; the reported ``loss`` is the penalised one, ``info["projections"]`` the
unweighted sum of squares of the best suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.attacks.base import ATTACKS, Behaviour, TestCase, check_positive
from mechrefusal.attacks.found import saved_directions
from mechrefusal.attacks.gcg import GCG, KV, GCGResult, SuffixPrompt
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast
from mechrefusal.models.hooks import Hook

NAME = "aware-gcg"


@dataclass(frozen=True)
class Capture:
    """Keep the block inputs of ``layers`` of each forward pass in ``into`` (layer -> activation)."""

    layers: Sequence[int]
    into: dict[int, Tensor]

    def hooks(self, model: Model) -> list[Hook]:
        def keep(layer: int):
            def hook(activation: Float[Tensor, "batch seq d_model"], hook: Any) -> Tensor:
                self.into[layer] = activation
                return activation

            return hook

        return [(f"blocks.{layer}.hook_in", keep(layer)) for layer in self.layers]


@ATTACKS.register(NAME)
@dataclass
class AwareGCG(GCG):
    """GCG with the projection penalty (``weight`` > 0); GCG's options and presets, defaults ``"cpu"``."""

    weight: float = 0.01
    """Weight of the summed squared projections against the target loss (a mean cross-entropy in nats)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("Direction-aware GCG's", {"weight": self.weight})
        self.caveat = "; ".join(filter(None, [self.caveat, "white-box: steers off the defence's saved directions"]))

    def check(self, model: Model) -> None:
        """One sentence if ``model`` has no saved directions to penalise."""
        saved_directions(model, NAME)

    def optimise(
        self, model: Model, behaviours: Sequence[Behaviour], *, intervention: Interventions = None, seed: int = 0
    ) -> GCGResult:
        """GCG's search with the penalised loss; the model must have saved directions."""
        self.check(model)
        return super().optimise(model, behaviours, intervention=intervention, seed=seed)

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """GCG's test case, with the best suffix's unweighted penalty in ``info["projections"]``."""
        [case] = super().run(model, behaviour, intervention=intervention, seed=seed)
        [prompt], _ = self.tokenise(model, [behaviour])
        suffix = model.tokenizer(case.info["suffix"], add_special_tokens=False)["input_ids"]
        inputs = torch.tensor([prompt.before + suffix + prompt.after + prompt.target], device=model.device)
        captured: dict[int, Tensor] = {}
        with torch.no_grad(), model.intervene(intervention, Capture(self._layers(model), captured)):
            with autocast(model, self.dtype):
                model.bridge(inputs, logits_to_keep=1)
        projections = self.projections(model, captured, prompt)
        return [TestCase(case.prompt, {**case.info, "projections": float(projections[0])})]

    def loss(
        self, model: Model, prompt: SuffixPrompt, cache: KV | None, inputs: Tensor, keep: Tensor
    ) -> Float[Tensor, " batch"]:
        """The target loss plus ``weight`` times the summed squared projections, per row."""
        captured: dict[int, Tensor] = {}
        with model.intervene(Capture(self._layers(model), captured)):
            target = super().loss(model, prompt, cache, inputs, keep)
        return target + self.weight * self.projections(model, captured, prompt).to(target.device)

    def projections(self, model: Model, residuals: dict[int, Tensor], prompt: SuffixPrompt) -> Float[Tensor, " batch"]:
        """Per row, the sum over saved directions and post-instruction positions of the squared projection
        of the block input at the direction's layer onto the unit direction (float32); ``residuals`` end
        with the template tail and the target, as every GCG forward pass does."""
        end = -len(prompt.target)
        total = torch.zeros((), device=model.device)
        for direction in saved_directions(model, NAME):
            tail = residuals[direction.layer][:, end - len(prompt.after) : end].float()
            total = total + (tail @ direction.unit.to(tail.device)).square().sum(1)
        return total

    def _layers(self, model: Model) -> list[int]:
        return sorted({direction.layer for direction in saved_directions(model, NAME)})
