"""Latent adversarial training: the latent attack's PGD (`mechrefusal.attacks.latent`) as the inner
maximisation of each safety micro-batch.

Before a micro-batch's safety loss is taken, a vector per prompt token is optimised at the chosen blocks'
inputs, under the micro-batch's own ablations, bounded in L2 by ``epsilon`` times each row's median
residual norm over its prompt (the attack's relative bound). With the ``compliance`` objective it lowers
the loss of the rule-made "Sure, here is ..." target (`attacks.targets.target_for`), as the attack does;
with ``refusal`` it raises the loss of the example's own refusal. The safety loss is then taken with the
row's best perturbation added, so the weights learn to refuse through it. Only harmful examples are
perturbed; the gradient of the inner steps reaches the perturbation alone, never the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mechrefusal.attacks.latent import median_norms, pgd_step
from mechrefusal.attacks.targets import target_for
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import Interventions
from mechrefusal.measure.losses import reply_cross_entropy
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.hooks import Hook
from mechrefusal.train.settings import LatentTrainingSettings, TrainSettings


@dataclass(frozen=True)
class ResidualShift:
    """Add ``deltas[i, row]`` to the block input of ``layers[i]`` at the first positions of each row (its
    prompt in a right-padded batch), where ``mask`` is set."""

    layers: tuple[int, ...]
    deltas: Float[Tensor, "layers batch prompt d_model"]
    mask: Bool[Tensor, "batch prompt"]

    def hooks(self, model: Model) -> list[Hook]:
        outside = [layer for layer in self.layers if not 0 <= layer < model.n_layers]
        if outside:
            raise SettingError(f"Latent layers {outside} are outside this model's blocks 0..{model.n_layers - 1}.")
        width = self.mask.shape[1]

        def shift(index: int):
            def add(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
                delta = self.deltas[index].to(activation.dtype) * self.mask[..., None].to(activation.dtype)
                return torch.cat([activation[:, :width] + delta, activation[:, width:]], dim=1)

            return add

        return [(f"blocks.{layer}.hook_in", shift(i)) for i, layer in enumerate(self.layers)]


@dataclass
class LatentAdversary:
    """The inner optimisation of latent adversarial training; ``log`` keeps each micro-batch's mean
    objective before and after it (the loss the perturbation descends)."""

    settings: LatentTrainingSettings
    layers: tuple[int, ...]
    log: list[tuple[float, float]] = field(default_factory=list)

    def __call__(self, model: Model, instructions: list[str], batch: ReplyBatch, interventions: Interventions):
        """The perturbation of ``batch`` (rows: ``instructions`` in order, under ``interventions``)."""
        lengths = batch.reply_mask.int().argmax(dim=1).tolist()  # each row's first reply token ends its prompt
        mask = (
            torch.arange(max(lengths), device=model.device)[None] < torch.tensor(lengths, device=model.device)[:, None]
        )
        if self.settings.objective == "refusal":
            target, sign = batch, -1.0
        else:
            targets = [target_for(instruction) for instruction in instructions]
            target, sign = model.tokenize_replies(instructions, targets, end_of_turn=False), 1.0
        with model.intervene(interventions):
            radius = self.settings.epsilon * median_norms(model, target, self.layers, lengths)
        deltas = torch.zeros(*radius.shape, mask.shape[1], model.d_model, device=model.device, requires_grad=True)
        best_loss = torch.full((len(lengths),), torch.inf, device=model.device)
        best = deltas.detach().clone()
        with torch.enable_grad():  # the perturbation's gradient, also where the caller's pass takes none
            for step in range(self.settings.steps + 1):
                with model.intervene(interventions, ResidualShift(self.layers, deltas, mask)):
                    losses = sign * reply_cross_entropy(model.reply_logits(target), target)
                if step == 0:
                    before = float(losses.detach().mean())
                better = losses.detach() < best_loss
                best_loss = torch.where(better, losses.detach(), best_loss)
                best[:, better] = deltas.detach()[:, better]
                if step == self.settings.steps:
                    break
                (gradient,) = torch.autograd.grad(losses.sum(), deltas)
                with torch.no_grad():
                    deltas.copy_(pgd_step(deltas, gradient, radius, self.settings.step_size))
        self.log.append((sign * before, sign * float(best_loss.mean())))
        return ResidualShift(self.layers, best, mask)

    def summary(self) -> dict:
        """The mean objective (compliance-target or refusal loss) before and after the inner steps."""
        before, after = zip(*self.log) if self.log else ((), ())
        return {
            **asdict(self.settings),
            "layers": list(self.layers),
            "micro_batches": len(self.log),
            "objective_before": sum(before) / max(len(before), 1),
            "objective_after": sum(after) / max(len(after), 1),
        }


def latent_adversary(model: Model, settings: TrainSettings) -> LatentAdversary | None:
    """The round's adversary (``None`` when ``settings.latent.epsilon`` is 0), on the configured layers or
    the first trained one."""
    if not settings.latent.epsilon:
        return None
    layers = settings.latent.layer_list() or (settings.layer_range(model.n_layers).start,)
    return LatentAdversary(settings.latent, layers)
