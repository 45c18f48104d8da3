"""Which ablation each method applies to a step's harmful (and harmless) examples (see METHOD.md §3-4)."""

from __future__ import annotations

import torch

from mechrefusal import data
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import Ablate, Interventions, RandomAblate
from mechrefusal.measure.activations import mean_activations
from mechrefusal.models import Model
from mechrefusal.train.loop import Plan, ablate_all, ablate_some


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


def safety_plan(
    method: str,
    model: Model,
    directions: DirectionSet,
    *,
    round_index: int,
    every: int,
    p: float,
    generator: torch.Generator,
    plain_share: float = 0.0,
) -> Plan:
    """The ablation plan of ``method`` for one round's harmful examples (round 0 is plain safety
    fine-tuning for all). ``plain_share``: fail-closed only, the probability that a harmful example is
    trained without the ablation."""
    if round_index == 0 or method == "sft":
        return ablate_all(None)
    if method == "fail-closed":
        if plain_share:
            return lambda step, n: ablate_some(Ablate(directions), 1 - plain_share, n, generator)
        return ablate_all(Ablate(directions))
    if method == "refat":
        return ReFATPlan(model, every=every, p=p, generator=generator)
    if method == "deeprefusal":
        return ablate_all(RandomAblate(directions[0], p=p, generator=generator))
    raise SettingError(f"Unknown training method {method!r}.")


def utility_plan(
    method: str, directions: DirectionSet, *, round_index: int, ablated_share: float, generator: torch.Generator
) -> Plan | None:
    """The ablation plan of one round's harmless examples: fail-closed's progressive rounds take the
    utility KL of a share ``ablated_share`` of them with the directions ablated (so that the ablation
    itself cannot become a cue to refuse); ``None`` (no ablation) otherwise."""
    if method != "fail-closed" or round_index == 0 or not ablated_share:
        return None
    return lambda step, n: ablate_some(Ablate(directions), ablated_share, n, generator)
