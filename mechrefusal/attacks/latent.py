"""The latent attack: an epsilon-bounded perturbation of the residual stream, optimised by projected
gradient descent (PGD) on the target loss.

A vector is added to the residual stream (the block input, ``blocks.{layer}.hook_in``) at every prompt
position of each chosen layer (default: the middle layer). Its bound is an L2 norm per token and layer,
**relative**: ``radius = epsilon x`` the median, over the prompt's positions, of the unperturbed residual
norm at that layer (under the campaign's intervention; the median ignores an attention sink's outsized
norm). So ``epsilon=0.1`` lets each token move a tenth of a typical residual norm at every scale of model.
Each step moves every token's vector by ``step_size x radius`` against its normalised gradient (L2 PGD)
and projects it back into the ball. It starts at zero, so it is deterministic and the seed is unused.

`PerturbResidual` finds the rendered prompt's token ids in each row (as the embedding attack does) and adds
the vectors there, so only the prompt's pass is perturbed: a KV-cached generation step holds no whole
prompt. The test case's ``info`` keeps the best vectors (6 significant digits; they are
``layers x prompt tokens x d_model`` floats), epsilon, each layer's radius, and the loss of exactly the
stored vectors, so results are reported against epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.attacks.base import (
    ATTACKS,
    Behaviour,
    TestCase,
    cache_settings,
    check_positive,
    check_target,
    preset_fields,
)
from mechrefusal.attacks.embedding import prompt_locator, stored
from mechrefusal.attacks.loss import reply_losses
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import check_dtype
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.autocast import autocast
from mechrefusal.models.hooks import Hook

CAVEAT = (
    "epsilon is relative to the median residual norm at each perturbed layer; papers that bound the "
    "perturbation absolutely are not comparable at the same number"
)


def check_layers(layers: tuple[int, ...], model: Model) -> None:
    """One sentence if any of ``layers`` is not one of ``model``'s blocks."""
    outside = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if outside:
        raise SettingError(f"Latent attack layers {outside} are outside this model's blocks 0..{model.n_layers - 1}.")


@dataclass(frozen=True)
class PerturbResidual:
    """Add ``deltas[i]`` to the block input of ``layers[i]`` at the positions of ``prompt_ids``, in every row
    whose token ids contain them (the last occurrence); other rows and passes are left alone."""

    prompt_ids: tuple[int, ...]
    layers: tuple[int, ...]
    deltas: Float[Tensor, "layers prompt d_model"]

    def hooks(self, model: Model) -> list[Hook]:
        check_layers(self.layers, model)
        locate, found = prompt_locator(self.prompt_ids)
        offsets = torch.arange(len(self.prompt_ids))
        order = sorted(range(len(self.layers)), key=lambda i: self.layers[i])

        def perturb(index: int, last: bool):
            def add(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
                rows, starts = found(keep=not last)
                if not len(rows):
                    return activation
                positions = starts[:, None] + offsets.to(activation.device)
                edited = activation.clone()
                delta = self.deltas[index].to(activation.device, activation.dtype)
                edited[rows[:, None], positions] = activation[rows[:, None], positions] + delta
                return edited

            return add

        return [("embed.hook_in", locate)] + [
            (f"blocks.{self.layers[i]}.hook_in", perturb(i, i == order[-1])) for i in order
        ]


def project(deltas: Float[Tensor, "*radius n d"], radius: Float[Tensor, "*radius"]) -> Float[Tensor, "*radius n d"]:
    """Each token's vector scaled back onto the L2 ball of its radius (one per layer, or per layer and row)
    when it lies outside."""
    norms = deltas.norm(dim=-1, keepdim=True)
    return deltas * (radius[..., None, None] / norms.clamp_min(1e-12)).clamp(max=1.0)


def pgd_step(
    deltas: Float[Tensor, "*radius n d"],
    gradient: Float[Tensor, "*radius n d"],
    radius: Float[Tensor, "*radius"],
    step_size: float,
) -> Float[Tensor, "*radius n d"]:
    """One L2 PGD step down ``gradient``: each token's vector moves ``step_size x radius`` against its
    normalised gradient and is projected back into its ball (the latent attack's and latent adversarial
    training's update)."""
    unit = gradient / gradient.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return project(deltas - step_size * radius[..., None, None] * unit, radius)


@ATTACKS.register("latent")
@dataclass
class LatentAttack:
    """PGD on an additive residual perturbation; defaults are the ``"cpu"`` preset."""

    epsilon: float = 0.1
    """Per-token L2 bound, as a fraction of the layer's median residual norm over the prompt."""
    steps: int = 100
    step_size: float = 0.1
    """Per step, as a fraction of the radius."""
    layers: tuple[int, ...] | None = None
    """Blocks whose input is perturbed (``None``: the middle one, ``n_layers // 2``)."""
    dtype: str = "auto"
    progress: bool = True
    caveat: str = field(init=False, default=CAVEAT)

    def __post_init__(self) -> None:
        check_positive("The latent attack's", {name: getattr(self, name) for name in ("epsilon", "steps", "step_size")})
        if self.layers is not None and not self.layers:
            raise SettingError("The latent attack needs at least one layer to perturb (or None: the middle one).")
        check_dtype(self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LatentAttack:
        """``"cpu"`` (100 steps) or ``"harmbench"`` (500 steps, GCG's HarmBench step budget)."""
        presets: dict[str, dict[str, Any]] = {"cpu": {}, "harmbench": {"steps": 500}}
        return cls(**preset_fields("latent attack", presets, name, overrides))

    def settings(self) -> dict[str, Any]:
        """The options that change the test cases (everything but ``progress`` and ``caveat``)."""
        return cache_settings(self)

    def check(self, model: Model) -> None:
        """One sentence if a perturbed layer is outside ``model``."""
        check_layers(self._layers(model), model)

    def _layers(self, model: Model) -> tuple[int, ...]:
        return (model.n_layers // 2,) if self.layers is None else tuple(self.layers)

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """One test case: the behaviour's text, ``info`` holding the perturbation and its bound."""
        check_target(behaviour, "the latent attack")
        layers = self._layers(model)
        prompt_ids = _prompt_ids(model, behaviour.text)
        batch = model.tokenize_replies([behaviour.text], [behaviour.target], end_of_turn=False)
        deltas = torch.zeros(len(layers), len(prompt_ids), model.d_model, device=model.device, requires_grad=True)
        edit = PerturbResidual(prompt_ids, layers, deltas)
        losses: list[float] = []
        with model.intervene(intervention, edit), autocast(model, self.dtype):
            radius = self.epsilon * median_norms(model, batch, layers, [len(prompt_ids)])[:, 0]
            best = (float("inf"), deltas.detach().clone())
            for step in tqdm(range(self.steps + 1), desc="latent", disable=not self.progress, leave=False):
                loss = reply_losses(model, batch)[0]
                losses.append(float(loss.detach()))
                if losses[-1] < best[0]:
                    best = (losses[-1], deltas.detach().clone())
                if step == self.steps:
                    break
                (gradient,) = torch.autograd.grad(loss, deltas)
                with torch.no_grad():
                    deltas.copy_(pgd_step(deltas, gradient, radius, self.step_size))
        kept = stored(best[1])
        final_edit = PerturbResidual(prompt_ids, layers, torch.tensor(kept, device=model.device))
        with torch.no_grad(), model.intervene(intervention, final_edit), autocast(model, self.dtype):
            final = float(reply_losses(model, batch)[0])
        info = {
            "epsilon": self.epsilon,
            "radius": [float(f"{r:.6g}") for r in radius.tolist()],
            "layers": list(layers),
            "loss": final,
            "initial_loss": losses[0],
            "steps": self.steps,
            "deltas": kept,
        }
        return [TestCase(behaviour.text, info)]

    def generation_intervention(self, model: Model, case: TestCase) -> PerturbResidual:
        """The stored perturbation, added during the prompt's pass while ``case`` is answered."""
        deltas = torch.tensor(case.info["deltas"], device=model.device)
        return PerturbResidual(_prompt_ids(model, case.prompt), tuple(case.info["layers"]), deltas)


def _prompt_ids(model: Model, text: str) -> tuple[int, ...]:
    return tuple(model.chat.encode(model.chat.prompt(text)))


def median_norms(
    model: Model, batch: ReplyBatch, layers: tuple[int, ...], prompt_lengths: list[int]
) -> Float[Tensor, "layers batch"]:
    """Each layer's median residual norm (block input) over each row's first ``prompt_lengths[row]``
    positions (its prompt, right-padded batches), under the active interventions and no gradient."""
    norms: dict[int, Tensor] = {}

    def capture(layer: int):
        def hook(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            rows = activation.detach().float().norm(dim=-1)
            norms[layer] = torch.stack([rows[i, :n].median() for i, n in enumerate(prompt_lengths)])
            return activation

        return hook

    with (
        torch.no_grad(),
        model.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_in", capture(layer)) for layer in layers]),
    ):
        model.reply_logits(batch)
    return torch.stack([norms[layer] for layer in layers])
