"""Direction-aware GCG: GCG that forces the target, then steers the residual stream off the defence's saved
directions while keeping the target forced.

The penalty of a suffix is the sum, over the saved directions and the post-instruction positions (the chat
template's tail after the suffix), of the squared projection of the residual stream at the direction's
layer (its block input, ``blocks.{layer}.hook_in``) onto the unit direction: an attacker who knows which
directions a defence reads refusal from steers the activations off them. Penalised from the first step it
made a weaker attack than GCG (on the toy refuser its gradient won and the target was never forced), so
the search has two phases. Forcing: a suffix whose target loss is at or above ``force_below`` scores its
target loss, as in GCG. Steering: a forced suffix (below ``force_below``) scores its penalised loss (target
loss plus ``weight`` times the penalty) squashed below ``force_below``, so it beats every unforced one, and
a step never leaves a forced suffix for an unforced one (it stays when no candidate is forced). GCG's own
greedy step and best suffix then run both phases; everything else (sampling, the retokenisation filter,
the prefix cache, early stop on the searched loss) is GCG's. With several behaviours, scores and the test
for a forced suffix apply to their sum (each behaviour's target loss is then below ``force_below``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.attacks.base import ATTACKS, Behaviour, check_positive
from mechrefusal.attacks.found import saved_directions
from mechrefusal.attacks.gcg import GCG, KV, GCGResult, SuffixPrompt, target_positions
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


@dataclass(frozen=True)
class AwareGCGResult(GCGResult):
    """GCG's result with the best suffix's two terms (summed over behaviours) and when steering began."""

    target_loss: float
    projections: float
    """The unweighted penalty."""
    steering_from: int | None
    """The first step whose suffix is forced (the steps before it forced the target), ``None`` if the
    target was never forced."""

    def info(self) -> dict[str, Any]:
        """GCG's record plus the best suffix's target loss and projections and the first steering step."""
        more = {"target_loss": self.target_loss, "projections": self.projections, "steering_from": self.steering_from}
        return super().info() | more


@ATTACKS.register(NAME)
@dataclass
class AwareGCG(GCG):
    """GCG that forces the target, then lowers the penalty (``weight`` > 0) while the target loss stays below
    ``force_below``; GCG's options and presets, defaults ``"cpu"``."""

    weight: float = 0.01
    """Weight of the summed squared projections against the target loss (a mean cross-entropy in nats)."""
    force_below: float = 0.1
    """The target loss (mean cross-entropy per target token, nats) below which the target counts as forced:
    the geometric mean of the target tokens' probabilities is then above 0.9. GCG's ``stop_loss`` (0.5) is
    too loose for this: the toy refuser, still refusing, scores 0.43 (only the first token is wrong)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("Direction-aware GCG's", {"weight": self.weight, "force_below": self.force_below})
        self.caveat = "; ".join(filter(None, [self.caveat, "white-box: steers off the defence's saved directions"]))

    def check(self, model: Model) -> None:
        """One sentence if ``model`` has no saved directions to penalise."""
        saved_directions(model, NAME)

    def optimise(
        self, model: Model, behaviours: Sequence[Behaviour], *, intervention: Interventions = None, seed: int = 0
    ) -> AwareGCGResult:
        """GCG's search with the two-phase loss; the model must have saved directions."""
        self.check(model)
        result = super().optimise(model, behaviours, intervention=intervention, seed=seed)
        prompts, _ = self.tokenise(model, behaviours)
        totals = torch.zeros(2)
        with torch.no_grad(), model.intervene(intervention), autocast(model, self.dtype):
            for prompt in prompts:
                ids = torch.tensor([result.suffix_ids + prompt.after + prompt.target], device=model.device)
                keep = target_positions(len(result.suffix_ids), prompt, model)
                totals += torch.cat(self.terms(model, prompt, None, ids, keep)).cpu()
        target, projections = totals.tolist()
        forced = [step for step, loss in enumerate(result.losses) if loss < self.force_below]
        return AwareGCGResult(
            **asdict(result), target_loss=target, projections=projections, steering_from=forced[0] if forced else None
        )

    def moves(self, current: float, candidate: float) -> bool:
        """Whether a step leaves the current suffix for the best candidate: not from a forced to an unforced one."""
        return current >= self.force_below or candidate < self.force_below

    def loss(
        self, model: Model, prompt: SuffixPrompt, cache: KV | None, inputs: Tensor, keep: Tensor
    ) -> Float[Tensor, " batch"]:
        """Per row, the target loss if it is at or above ``force_below`` (forcing), else the penalised loss
        ``x`` squashed to ``force_below * x / (force_below + x)``: increasing, about ``x`` while small and
        below ``force_below`` (steering)."""
        target, projections = self.terms(model, prompt, cache, inputs, keep)
        penalised = target + self.weight * projections
        squashed = self.force_below * penalised / (self.force_below + penalised)
        return torch.where(target < self.force_below, squashed, target)

    def terms(
        self, model: Model, prompt: SuffixPrompt, cache: KV | None, inputs: Tensor, keep: Tensor
    ) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
        """Per row, the target loss and the penalty (GCG's forward pass, block inputs captured)."""
        captured: dict[int, Tensor] = {}
        with model.intervene(Capture(self._layers(model), captured)):
            target = super().loss(model, prompt, cache, inputs, keep)
        return target, self.projections(model, captured, prompt).to(target.device)

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
