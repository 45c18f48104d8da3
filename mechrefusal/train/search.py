"""The trainer's direction search: the next refusal direction of a model, found with the earlier ones
ablated and orthogonally to them, on the train split and scored on the val split; and the searches with
nothing ablated that the fail-closed variants add (the unconditioned direction, fresh DIM candidates)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from mechrefusal import data
from mechrefusal.directions import DIMSettings, Direction, DirectionSet, RDOSettings, SelectionFilters, find_direction
from mechrefusal.directions.dim import dim_candidates
from mechrefusal.directions.finder import make_finder
from mechrefusal.interventions import Ablate
from mechrefusal.models import Model

if TYPE_CHECKING:
    from mechrefusal.train.settings import TrainSettings

N_SEARCH = 64
"""Prompts per set (harmful; harmless) the candidates are computed from."""
N_SCORE = 16
"""Validation prompts per set the candidates are scored on."""
SCORES = ("bypass", "induce", "kl", "passed_filters")


def search_summary(direction: Direction) -> dict:
    """A searched direction's cell, finder and scores, for a round's record (kept also when it was rejected)."""
    summary = {
        "layer": direction.layer,
        "position": direction.position,
        "method": direction.method,
        **{key: direction.provenance[key] for key in SCORES},
    }
    if "rdo_rejected" in direction.provenance:
        summary["rdo_rejected"] = direction.provenance["rdo_rejected"]
    return summary


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


def trainer_search(
    model: Model, directions: DirectionSet, settings: TrainSettings, *, finder: str | None = None, progress: bool = True
) -> Direction:
    """`next_direction` with a training job's search settings (``finder``: another finder than its own)."""
    return next_direction(
        model,
        directions,
        finder=finder or settings.finder,
        dtype=settings.dtype,
        progress=progress,
        filters=SelectionFilters(
            max_kl=settings.search.max_kl,
            min_induce=settings.search.min_induce,
            prune_layer_fraction=settings.search.prune_layer_fraction,
        ),
        fallback=settings.search.fallback,
        rdo_settings=settings.rdo,
        dim_settings=settings.dim,
        n_prompts=settings.search.n_prompts,
        n_val=settings.search.n_val,
    )


def max_cosine(direction: Direction, directions: DirectionSet) -> float:
    """The largest absolute cosine of ``direction`` with any of ``directions`` (0 for an empty set)."""
    if not len(directions):
        return 0.0
    units = torch.nn.functional.normalize(directions.matrix.float(), dim=-1)
    return float((units @ direction.unit.float()).abs().max())


def fresh_candidates(model: Model, k: int, settings: TrainSettings, *, progress: bool = True) -> list[Direction]:
    """The ``k`` best DIM candidates of a search with nothing ablated, with the search's own prompts and
    settings: its finalists that pass the layer and KL filters (and the induce filter where it was
    measured: the selection measures it only for the cells it chooses), by bypass score."""
    search = trainer_search(model, DirectionSet(), settings, finder="dim", progress=progress)
    scores = search.provenance["scores"]
    bypass, kl, induce = (torch.tensor(scores[key]) for key in ("bypass", "kl", "induce"))
    kept_layers = torch.arange(len(bypass))[:, None] < (1 - settings.search.prune_layer_fraction) * model.n_layers
    eligible = (torch.tensor(scores["finalist"]) & kept_layers & (kl <= settings.search.max_kl)) & ~(
        induce < settings.search.min_induce
    )
    ranked = torch.where(eligible, bypass, torch.inf).flatten().argsort()[: min(k, int(eligible.sum()))]
    if not len(ranked):
        return []
    n = settings.search.n_prompts
    vectors, _ = dim_candidates(
        model,
        data.load("harmful", "train")[:n],
        data.load("harmless", "train")[:n],
        exclude_massive=settings.dim.exclude_massive,
        progress=False,
    )
    positions = scores["positions"]
    cells = [divmod(int(flat), len(positions)) for flat in ranked]
    return [
        Direction(
            vectors[layer, slot].clone(), layer, positions[slot], "dim-fresh", {"bypass": float(bypass[layer, slot])}
        )
        for layer, slot in cells
    ]
