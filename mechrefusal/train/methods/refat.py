"""ReFAT baseline: per-layer DIM directions re-estimated during the round, ablated for a random share."""

from __future__ import annotations

import torch

from mechrefusal import data
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.interventions import Ablate
from mechrefusal.measure.activations import mean_activations
from mechrefusal.models import Model
from mechrefusal.train.loop import Groups, Plan, ablate_some
from mechrefusal.train.methods.base import Method


class ReFAT(Method):
    """Each harmful example of a round after round 0 is trained with ReFAT's per-layer directions
    ablated with probability ``ablation_probability``, re-estimated every ``refat_every`` steps."""

    def safety_plan(
        self, model: Model, directions: DirectionSet, *, round_index: int, generator: torch.Generator
    ) -> Plan:
        return ReFATPlan(
            model, every=self.settings.refat_every, p=self.settings.ablation_probability, generator=generator
        )


class ReFATPlan:
    """ReFAT: per-layer DIM directions (later 75% of layers, last prompt token), re-estimated from the
    current model every ``every`` steps on 32 + 32 prompts; each harmful example is trained with them
    ablated with probability ``p``."""

    def __init__(self, model: Model, *, every: int, p: float, generator: torch.Generator, n_prompts: int = 32):
        self.model, self.every, self.p, self.generator = model, every, p, generator
        self.layers = list(range(model.n_layers // 4, model.n_layers))
        self.prompts = data.load("harmful", "train")[:n_prompts], data.load("harmless", "train")[:n_prompts]
        self.ablation: list[Ablate] = []
        self.estimated_at: int | None = None

    def __call__(self, step: int, n: int) -> Groups:
        if self.estimated_at is None or step - self.estimated_at >= self.every:
            self._estimate()
            self.estimated_at = step
        return ablate_some(self.ablation, self.p, n, self.generator)

    def _estimate(self) -> None:
        was_training = self.model.hf_model.training
        self.model.hf_model.eval()
        means = [
            mean_activations(self.model, prompts, layers=self.layers, positions=[-1], progress=False).mean
            for prompts in self.prompts
        ]
        self.model.hf_model.train(was_training)
        difference = (means[0] - means[1])[:, 0].float()
        self.ablation = [
            Ablate(Direction(difference[i], layer, -1, "refat-dim"), layers=[layer])
            for i, layer in enumerate(self.layers)
        ]
