"""Direction finders: the `Finder` protocol, the `DirectionSearch` every finder is given, and `FINDERS`.

A finder is a class whose constructor takes its own options (keywords with defaults) and whose instances
map a `DirectionSearch` to a `Direction`. `find_direction` and the trainer's search build it with the
options its constructor names (`make_finder`) and score what it returns unless it scored it itself.
To add one, write the class in one file and register it (``FINDERS.register("name")``) or name it as
``"package.module:Class"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.registry import Registry
from mechrefusal.directions.selection import SelectionFilters, score_direction
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast


@dataclass
class DirectionSearch:
    """What every finder is given: the model, the prompts and the conditions of the search."""

    model: Model
    harmful: Sequence[str]
    """Prompts the candidates are computed from."""
    harmless: Sequence[str]
    harmful_val: list[str]
    """Prompts the candidates are scored on."""
    harmless_val: list[str]
    filters: SelectionFilters
    sweep_dtype: str = "auto"
    orthogonal_to: Direction | DirectionSet | None = None
    """Search only the orthogonal complement of these directions."""
    context: Interventions = None
    """Interventions active during the whole search."""
    batch_size: int = 16
    progress: bool = True
    provenance: dict = field(default_factory=dict)
    """What every found direction's provenance starts with (model, data sizes and hashes, versions)."""

    def score(self, direction: Direction) -> Direction:
        """``direction`` with the search's provenance and, unless its finder scored it, its bypass, induce
        and KL scores and whether it passes the filters."""
        scores = {}
        if "passed_filters" not in direction.provenance:
            with self.model.intervene(self.context), autocast(self.model, self.sweep_dtype):
                scores = score_direction(
                    self.model, direction, self.harmful_val, self.harmless_val, batch_size=self.batch_size
                )
            passed = self.filters.passes(direction.layer, self.model.n_layers, scores["kl"], scores["induce"])
            scores["passed_filters"] = passed
        direction.provenance = {**self.provenance, **direction.provenance, **scores}
        return direction


@runtime_checkable
class Finder(Protocol):
    """Finds a refusal direction; its options are its constructor's keywords."""

    def __call__(self, search: DirectionSearch) -> Direction: ...


FINDERS: Registry[type[Finder]] = Registry("direction finder")
"""The direction finders by name (find_direction's ``method``, the ``finder`` settings); each finder's
module registers it, and `mechrefusal.directions` imports them all."""


def options_taken(spec: str) -> set[str]:
    """The option names the constructor of the finder ``spec`` takes."""
    return set(inspect.signature(FINDERS.get(spec)).parameters)


def make_finder(spec: str, **options) -> Finder:
    """The finder ``spec`` names, built with those ``options`` its constructor takes (the rest are left out)."""
    taken = options_taken(spec)
    return FINDERS.get(spec)(**{name: value for name, value in options.items() if name in taken})
