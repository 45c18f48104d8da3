"""Interventions that draw random numbers: finding and reseeding the torch generators they hold.

An intervention is a dataclass (or a list or tuple of them, nested); one that holds a ``torch.Generator``
(`RandomAblate`) acts differently on each forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch

from mechrefusal.models.hooks import Interventions


def map_generators(value: Any, change: Callable[[torch.Generator], torch.Generator]) -> Any:
    """``value`` with each generator in it (at any depth of dataclasses, lists and tuples) replaced by
    ``change(generator)``; parts that hold none are returned as they are, not copied."""
    if isinstance(value, torch.Generator):
        return change(value)
    if is_dataclass(value) and not isinstance(value, type):
        old = {f.name: getattr(value, f.name) for f in fields(value) if f.init}
        new = {name: map_generators(item, change) for name, item in old.items()}
        return replace(value, **new) if any(new[name] is not old[name] for name in old) else value
    if isinstance(value, (list, tuple)):
        items = [map_generators(item, change) for item in value]
        return type(value)(items) if any(a is not b for a, b in zip(items, value)) else value
    return value


def draws_at_random(intervention: object) -> bool:
    """Whether an intervention (or any nesting of dataclasses, lists and tuples of them) holds a
    ``torch.Generator``, so that it may act differently on each forward pass (``RandomAblate``)."""
    found: list[torch.Generator] = []

    def note(generator: torch.Generator) -> torch.Generator:
        found.append(generator)
        return generator

    map_generators(intervention, note)
    return bool(found)


def reseeded(intervention: Interventions, seed: int) -> Interventions:
    """``intervention`` with every torch generator in it replaced by a new one seeded with ``seed`` (the
    caller's generators are left alone)."""
    return map_generators(intervention, lambda generator: torch.Generator().manual_seed(seed))
