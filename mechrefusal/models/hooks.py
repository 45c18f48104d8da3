"""What `Model.intervene` applies: anything with ``hooks(model)``, the forward hooks it adds for a block."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: `Model` applies interventions, so it is defined after them
    from mechrefusal.models.model import Model

Hook = tuple[str, Callable]
"""A TransformerLens hook name and the function run there: ``(activation, hook) -> activation``."""


@runtime_checkable
class Intervention(Protocol):
    """An edit of a forward pass, given as the hooks that make it (see `mechrefusal.interventions`)."""

    def hooks(self, model: Model) -> list[Hook]: ...


Interventions = Intervention | Sequence[Intervention] | None
"""One intervention, several, or none."""


def flatten(*interventions: Interventions) -> list[Intervention]:
    """The interventions as one flat list (``None`` entries skipped, lists flattened)."""
    flat: list[Intervention] = []
    for item in interventions:
        if isinstance(item, (list, tuple)):
            flat.extend(item)
        elif item is not None:
            flat.append(item)  # type: ignore[arg-type]  # not a sequence, so one intervention
    return flat
