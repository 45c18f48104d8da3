"""Interventions on a model's residual stream: scoped hooks (`Ablate`, `Add`, `RandomAblate`, `OnRows`)
and their weight-edit form (`orthogonalize`).

Add one: a frozen dataclass with ``hooks(model) -> [(hook name, function)]`` in its own module here; it
then works with ``model.intervene(...)`` and everything that takes ``Interventions``.
"""

from mechrefusal.interventions.orthogonalize import orthogonalize
from mechrefusal.interventions.residual import (
    ABLATION_SITES,
    Ablate,
    Add,
    OnRows,
    RandomAblate,
    ablation_sites,
    per_row,
    uniform,
)
from mechrefusal.models.hooks import Intervention, Interventions

__all__ = [
    "ABLATION_SITES",
    "ablation_sites",
    "Ablate",
    "Add",
    "Intervention",
    "Interventions",
    "OnRows",
    "RandomAblate",
    "orthogonalize",
    "per_row",
    "uniform",
]
