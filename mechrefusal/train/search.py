"""The trainer's direction search: the next refusal direction of a model, found with the earlier ones
ablated and orthogonally to them, on the train split and scored on the val split."""

from __future__ import annotations

import warnings

from mechrefusal import data
from mechrefusal.directions import Direction, DirectionSet, RDOSettings, SelectionFilters, find_direction
from mechrefusal.interventions import Ablate
from mechrefusal.models import Model

N_SEARCH = 64
"""Prompts per set (harmful; harmless) the candidates are computed from."""
N_SCORE = 16
"""Validation prompts per set the candidates are scored on."""
SCORES = ("bypass", "induce", "kl", "passed_filters")


def next_direction(
    model: Model,
    directions: DirectionSet,
    *,
    finder: str = "rdo",
    filters: SelectionFilters,
    dtype: str = "auto",
    dim: Direction | None = None,
    fallback: bool = True,
    rdo_settings: RDOSettings = RDOSettings(),
    n_prompts: int = N_SEARCH,
    n_val: int = N_SCORE,
    progress: bool = True,
) -> Direction:
    """The direction ``model`` refuses through once ``directions`` are ablated (accept it only if
    ``provenance["passed_filters"]``). ``dim``: an RDO anchor found already (skips the DIM search).
    ``n_prompts`` train and ``n_val`` validation prompts per set define and score the candidates.

    With ``finder="rdo"`` and ``fallback``, an RDO direction that fails the filters while its DIM anchor
    passes them gives way to the anchor (its provenance keeps the rejected RDO scores under
    ``"rdo_rejected"``): RDO refines the anchor, it never makes the search find less."""
    earlier = directions if len(directions) else None

    def find(method: str, anchor: Direction | None = None) -> Direction:
        return find_direction(
            model,
            data.load("harmful", "train")[:n_prompts],
            data.load("harmless", "train")[:n_prompts],
            method=method,
            harmful_val=data.load("harmful", "val"),
            harmless_val=data.load("harmless", "val"),
            n_val=n_val,
            orthogonal_to=earlier,
            context=Ablate(directions) if earlier else None,
            filters=filters,
            dim=anchor,
            sweep_dtype=dtype,
            rdo_settings=rdo_settings,
            progress=progress,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed filter is reported in the provenance, not as a warning
        anchor = dim if dim is not None else find("dim")
        if finder == "dim":
            return anchor
        refined = find(finder, anchor)
    if not fallback or refined.provenance["passed_filters"] or not anchor.provenance.get("passed_filters"):
        return refined
    anchor.provenance = {**anchor.provenance, "rdo_rejected": {key: refined.provenance[key] for key in SCORES}}
    return anchor
