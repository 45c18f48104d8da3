"""DeepRefusal baseline: the first direction ablated at random sites and positions."""

from __future__ import annotations

import torch

from mechrefusal.core.directions import DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import RandomAblate
from mechrefusal.models import Model
from mechrefusal.train.loop import Plan, ablate_all
from mechrefusal.train.methods.base import Method
from mechrefusal.train.settings import TrainSettings


class DeepRefusal(Method):
    """Every harmful example trained with the round-0 direction ablated at each site and position with
    probability ``ablation_probability``."""

    needs_direction = True

    def __init__(self, settings: TrainSettings) -> None:
        if settings.activation_checkpointing:
            raise SettingError(
                "DeepRefusal's random ablation would be drawn anew when activation checkpointing "
                "recomputes a layer; train deeprefusal without --activation-checkpointing."
            )
        super().__init__(settings)

    def safety_plan(
        self, model: Model, directions: DirectionSet, *, round_index: int, generator: torch.Generator
    ) -> Plan:
        return ablate_all(RandomAblate(directions[0], p=self.settings.ablation_probability, generator=generator))
