"""The trainer's direction search: the next refusal direction of a model, found with the earlier ones
ablated and orthogonally to them, on the train split and scored on the val split."""

from __future__ import annotations

import warnings

from mechrefusal import data
from mechrefusal.directions import Direction, DirectionSet, SelectionFilters, find_direction
from mechrefusal.interventions import Ablate
from mechrefusal.models import Model

N_SEARCH = 64
"""Prompts per set (harmful; harmless) the candidates are computed from."""
N_SCORE = 16
"""Validation prompts per set the candidates are scored on."""


def next_direction(model: Model, directions: DirectionSet, *, finder: str = "dim", filters: SelectionFilters,
                   dtype: str = "bfloat16", dim: Direction | None = None, progress: bool = True) -> Direction:
    """The direction ``model`` refuses through once ``directions`` are ablated (accept it only if
    ``provenance["passed_filters"]``). ``dim``: an RDO anchor found already (skips the DIM search)."""
    earlier = directions if len(directions) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed filter is reported in the provenance, not as a warning
        return find_direction(
            model, data.load("harmful", "train")[:N_SEARCH], data.load("harmless", "train")[:N_SEARCH],
            method=finder, harmful_val=data.load("harmful", "val"), harmless_val=data.load("harmless", "val"),
            n_val=N_SCORE, orthogonal_to=earlier, context=Ablate(directions) if earlier else None,
            filters=filters, dim=dim, sweep_dtype=dtype, progress=progress)
