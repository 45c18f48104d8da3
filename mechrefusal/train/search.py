"""The trainer's direction search: the next refusal direction of a model, found with the earlier ones
ablated and orthogonally to them, on the train split and scored on the val split."""

from __future__ import annotations

import warnings

from mechrefusal import data
from mechrefusal.directions import DIMSettings, Direction, DirectionSet, RDOSettings, SelectionFilters, find_direction
from mechrefusal.directions.finder import make_finder
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
    dim_settings: DIMSettings | None = None,
    n_prompts: int = N_SEARCH,
    n_val: int = N_SCORE,
    progress: bool = True,
) -> Direction:
    """The direction ``model`` refuses through once ``directions`` are ablated (accept it only if
    ``provenance["passed_filters"]``), found by ``finder`` (a name or ``"package.module:Class"``).
    ``n_prompts`` train and ``n_val`` validation prompts per set define and score the candidates.

    ``dim`` (an anchor found already), ``fallback``, ``rdo_settings`` and the DIM search's ``dim_settings``
    are offered to the finder and
    reach it only if its constructor takes them: with RDO, ``fallback`` lets a DIM anchor that passes the
    filters stand in for an RDO direction that fails them (see `RDOFinder`)."""
    earlier = directions if len(directions) else None
    offered = {
        "fallback": fallback,
        "rdo_settings": rdo_settings,
        "dim_settings": dim_settings or DIMSettings(),
        **({"dim": dim} if dim is not None else {}),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed filter is reported in the provenance, not as a warning
        return find_direction(
            model,
            data.load("harmful", "train")[:n_prompts],
            data.load("harmless", "train")[:n_prompts],
            method=make_finder(finder, **offered),
            harmful_val=data.load("harmful", "val"),
            harmless_val=data.load("harmless", "val"),
            n_val=n_val,
            orthogonal_to=earlier,
            context=Ablate(directions) if earlier else None,
            filters=filters,
            sweep_dtype=dtype,
            progress=progress,
        )
