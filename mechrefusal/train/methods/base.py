"""`Method`: the defaults of a training method (no ablation, search after round 0 only, never stop early)."""

from __future__ import annotations

import torch

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model
from mechrefusal.train.loop import Plan, ablate_all
from mechrefusal.train.settings import TrainSettings


class Method:
    """Base class of the training methods; a subclass overrides what its rounds do differently."""

    needs_direction = False

    def __init__(self, settings: TrainSettings) -> None:
        self.settings = settings

    def last_round(self) -> int:
        return self.settings.rounds

    def safety_plan(
        self, model: Model, directions: DirectionSet, *, round_index: int, generator: torch.Generator
    ) -> Plan:
        return ablate_all(None)

    def utility_plan(self, directions: DirectionSet, *, round_index: int, generator: torch.Generator) -> Plan | None:
        return None

    def val_intervention(self, directions: DirectionSet, *, round_index: int) -> Interventions:
        return None

    def searches_after(self, round_index: int) -> bool:
        return False

    def stops_after(self, round_index: int, found: Direction | None) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
