"""Which ablation each method applies to a step's harmful examples (see METHOD.md §3-4)."""

from __future__ import annotations

import torch

from mechrefusal import data
from mechrefusal.activations import mean_activations
from mechrefusal.directions import Direction, DirectionSet
from mechrefusal.interventions import Ablate, Interventions, RandomAblate
from mechrefusal.models import Model
from mechrefusal.train.loop import SafetyPlan, ablate_all


class ReFATPlan:
    """ReFAT: per-layer DIM directions (later 75% of layers, last prompt token), re-estimated from the
    current model every ``every`` steps on 32 + 32 prompts; each harmful example is trained with them
    ablated with probability ``p``."""

    def __init__(self, model: Model, *, every: int, p: float, generator: torch.Generator, n_prompts: int = 32):
        self.model, self.every, self.p, self.generator = model, every, p, generator
        self.layers = list(range(model.n_layers // 4, model.n_layers))
        self.prompts = data.load("harmful", "train")[:n_prompts], data.load("harmless", "train")[:n_prompts]
        self.ablation: list[Ablate] = []
        self.estimated_at = None

    def __call__(self, step: int, n: int) -> list[tuple[list[int], Interventions]]:
        if self.estimated_at is None or step - self.estimated_at >= self.every:
            self._estimate()
            self.estimated_at = step
        ablated = (torch.rand(n, generator=self.generator) < self.p).tolist()
        return [([i for i in range(n) if ablated[i]], self.ablation),
                ([i for i in range(n) if not ablated[i]], None)]

    def _estimate(self) -> None:
        was_training = self.model.hf_model.training
        self.model.hf_model.eval()
        means = [mean_activations(self.model, prompts, layers=self.layers, positions=[-1], progress=False).mean
                 for prompts in self.prompts]
        self.model.hf_model.train(was_training)
        difference = (means[0] - means[1])[:, 0].float()
        self.ablation = [Ablate(Direction(difference[i], layer, -1, "refat-dim"), layers=[layer])
                         for i, layer in enumerate(self.layers)]


def safety_plan(method: str, model: Model, directions: DirectionSet, *, round_index: int, every: int, p: float,
                generator: torch.Generator) -> SafetyPlan:
    """The ablation plan of ``method`` for one round (round 0 is plain safety fine-tuning for all)."""
    if round_index == 0 or method == "sft":
        return ablate_all(None)
    if method == "fail-closed":
        return ablate_all(Ablate(directions))
    if method == "refat":
        return ReFATPlan(model, every=every, p=p, generator=generator)
    if method == "deeprefusal":
        return ablate_all(RandomAblate(directions[0], p=p, generator=generator))
    raise ValueError(f"Unknown training method {method!r}.")
