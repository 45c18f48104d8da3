"""Training methods: the `TrainingMethod` protocol and the `METHODS` registry (one module per method).

The job trains round 0 (plain safety fine-tuning) for every method, then asks the method for each later
round's plans, its validation intervention, whether to search for a new direction and whether to stop.
To add a method, subclass `mechrefusal.train.methods.base.Method` in one file and register it
(``METHODS.register("name")``) or pass ``--method package.module:Class``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from mechrefusal.core.registry import Registry

if TYPE_CHECKING:
    from mechrefusal.core.directions import Direction, DirectionSet
    from mechrefusal.interventions import Interventions
    from mechrefusal.models import Model
    from mechrefusal.train.loop import Plan
    from mechrefusal.train.settings import TrainSettings


@runtime_checkable
class TrainingMethod(Protocol):
    """What the training job asks of a method (built as ``Method(settings)``)."""

    needs_direction: bool
    """Whether the method's rounds ablate a found direction (without one it stops, with a warning)."""

    def __init__(self, settings: TrainSettings) -> None: ...

    def last_round(self) -> int:
        """The index of the last round trained (0: round 0 only)."""

    def safety_plan(
        self, model: Model, directions: DirectionSet, *, round_index: int, generator: torch.Generator
    ) -> Plan:
        """The ablation plan of the harmful examples of a round after round 0."""

    def utility_plan(self, directions: DirectionSet, *, round_index: int, generator: torch.Generator) -> Plan | None:
        """The ablation plan of the harmless examples of a round after round 0 (``None``: no ablation)."""

    def val_intervention(self, directions: DirectionSet, *, round_index: int) -> Interventions:
        """The intervention the validation loss of a round after round 0 is taken under."""

    def searches_after(self, round_index: int) -> bool:
        """Whether a direction is searched after a round after round 0 (round 0 is always searched)."""

    def stops_after(self, round_index: int, found: Direction | None) -> bool:
        """Whether training stops after this round, given the direction its search found."""


METHODS: Registry[type[TrainingMethod]] = Registry(
    "training method",
    {
        "sft": "mechrefusal.train.methods.sft:SFT",
        "fail-closed": "mechrefusal.train.methods.fail_closed:FailClosed",
        "refat": "mechrefusal.train.methods.refat:ReFAT",
        "deeprefusal": "mechrefusal.train.methods.deeprefusal:DeepRefusal",
    },
)
"""The training methods by name (TrainSettings.method)."""
