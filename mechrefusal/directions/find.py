"""`find_direction`: the public entry point to every direction finder."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import resolve
from mechrefusal.core.provenance import prompts_sha256, versions
from mechrefusal.directions.dim import dim_candidates
from mechrefusal.directions.rdo import RDOSettings, rdo
from mechrefusal.directions.selection import (
    FINALISTS,
    SEARCHES,
    SelectionFilters,
    choose,
    score_candidates,
    score_direction,
)
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model, check_instructions
from mechrefusal.models.autocast import autocast

METHODS = ("dim", "rdo")


def find_direction(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    method: str = "dim",
    harmful_val: Sequence[str] | None = None,
    harmless_val: Sequence[str] | None = None,
    n_val: int = 32,
    filters: SelectionFilters = SelectionFilters(),
    exclude_massive: bool = True,
    full_grid: bool = False,
    search: str = "attribution",
    screen: int = 8,
    finalists: int | None = None,
    probes: int = 4,
    sweep_dtype: str = "auto",
    orthogonal_to: Direction | DirectionSet | None = None,
    context: Interventions = None,
    dim: Direction | None = None,
    independent_of: Direction | DirectionSet | None = None,
    rdo_settings: RDOSettings = RDOSettings(),
    batch_size: int = 16,
    progress: bool = True,
) -> Direction:
    """Find the refusal direction of ``model``.

    Args:
        harmful, harmless: prompts the candidates are computed from (e.g. the train splits).
        method: ``"dim"`` (difference in means at every layer and post-instruction position, then the
            selection of METHOD.md §2) or ``"rdo"`` (Refusal Direction Optimisation, anchored at the DIM
            direction's layer and norm, trained on targets for the first ``rdo_settings.n_prompts`` prompts).
        harmful_val, harmless_val: prompts the candidates are scored on (default: the first ``n_val``
            of ``harmful`` and ``harmless``); at most ``n_val`` of each are used.
        filters: the selection filters (KL, induce, pruned last layers).
        exclude_massive: zero the attention sink's massive dimensions in the candidates (and keep the RDO
            direction orthogonal to them).
        full_grid: score every candidate on the whole validation sets, induce included (slow; no search).
        search, finalists: how the ``finalists`` candidates scored exactly are picked (default number:
            8 for ``"attribution"``, 16 for ``"screen"``): ``"attribution"`` ranks every candidate by
            first-order estimates of its bypass and KL (``probes`` backward passes for the KL), about
            as costly as a few forward passes (the screen runs after all when no finalist passes the
            filters: ``provenance["scores"]["screen_fallback"]``); ``"screen"`` by exact scores on the first
            ``screen`` validation prompts of each set (one forward pass per candidate); ``"exact"`` scores every
            candidate exactly (induce only until one passes, unlike ``full_grid``).
        sweep_dtype: compute dtype of the candidate sweep (``"auto"``: bf16 autocast where fast, see
            `mechrefusal.core.precision`; ``"bfloat16"`` or ``"float32"``);
            the means that define the candidates are always accumulated from float32 activations.
        orthogonal_to: search only the orthogonal complement of these directions.
        context: interventions active during the whole search (e.g. ``Ablate(earlier_directions)``
            to find the direction a model uses once the earlier ones are gone).
        dim: rdo only: the DIM direction to anchor on (default: run the DIM search first).
        independent_of: rdo only: add the representational-independence penalty against these directions.
        rdo_settings: rdo only: loss weights, sizes and optimiser settings.

    The returned direction's ``provenance`` holds the model, data sizes, versions and its bypass, induce
    and KL scores; DIM adds the whole score grid (``provenance["scores"]``, with the
    attribution estimates under ``"estimated_bypass"`` and ``"estimated_kl"``), RDO its settings, loss
    history and DIM anchor (``provenance["rdo"]``, ``provenance["dim"]``).
    """
    if method not in METHODS:
        raise SettingError(f"Unknown direction finder {method!r}; choose one of {', '.join(METHODS)}.")
    if search not in SEARCHES:
        raise SettingError(f"Unknown candidate search {search!r}; choose one of {', '.join(SEARCHES)}.")
    if method != "rdo" and (dim is not None or independent_of is not None):
        raise SettingError("dim= and independent_of= apply to method='rdo' only.")
    for name, prompts in (
        ("harmful", harmful),
        ("harmless", harmless),
        ("harmful_val", harmful_val),
        ("harmless_val", harmless_val),
    ):
        if prompts is not None:
            check_instructions(prompts, name)
    harmful_val = list(harmful_val if harmful_val is not None else harmful)[:n_val]
    harmless_val = list(harmless_val if harmless_val is not None else harmless)[:n_val]
    common = {
        "model": model.spec,
        "n_harmful": len(harmful),
        "n_harmless": len(harmless),
        "data_sha256": prompts_sha256([*harmful, "\0", *harmless, "\0", *harmful_val, "\0", *harmless_val]),
        "n_harmful_val": len(harmful_val),
        "n_harmless_val": len(harmless_val),
        "filters": vars(filters),
        "sweep_dtype": sweep_dtype,
        "precision": resolve(sweep_dtype, model.device).to_dict(),
        "orthogonal_to": orthogonal_to is not None,
        "versions": versions(),
    }
    if dim is None:
        dim = _dim(
            model,
            harmful,
            harmless,
            harmful_val,
            harmless_val,
            common,
            filters=filters,
            exclude_massive=exclude_massive,
            full_grid=full_grid,
            search=search,
            screen=screen,
            finalists=finalists if finalists is not None else FINALISTS[search],
            probes=probes,
            sweep_dtype=sweep_dtype,
            orthogonal_to=orthogonal_to,
            context=context,
            batch_size=batch_size,
            progress=progress,
        )
    if method == "dim":
        return dim
    found = rdo(
        model,
        harmful,
        harmless,
        dim,
        settings=rdo_settings,
        orthogonal_to=orthogonal_to,
        independent_of=independent_of,
        context=context,
        exclude_massive=exclude_massive,
        batch_size=batch_size,
        progress=progress,
    )
    with model.intervene(context), autocast(model, sweep_dtype):
        scores = score_direction(model, found, harmful_val, harmless_val, batch_size=batch_size)
    passed = filters.passes(found.layer, model.n_layers, scores["kl"], scores["induce"])
    found.provenance = {**common, **found.provenance, **scores, "passed_filters": passed}
    return found


def _dim(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    harmful_val: list[str],
    harmless_val: list[str],
    common: dict,
    *,
    filters: SelectionFilters,
    exclude_massive: bool,
    full_grid: bool,
    search: str,
    screen: int,
    finalists: int | None,
    probes: int,
    sweep_dtype: str,
    orthogonal_to: Direction | DirectionSet | None,
    context: Interventions,
    batch_size: int,
    progress: bool,
) -> Direction:
    """Difference in means at every layer and position, then the selection of METHOD.md §2."""
    with model.intervene(context):
        candidates, zeroed = dim_candidates(
            model, harmful, harmless, exclude_massive=exclude_massive, batch_size=batch_size, progress=progress
        )
        if orthogonal_to is not None:
            q = as_direction_set(orthogonal_to).basis().to(candidates.device)
            candidates = candidates - (candidates @ q) @ q.T
        positions = model.post_instruction_positions
        with autocast(model, sweep_dtype):
            scores = score_candidates(
                model,
                candidates,
                positions,
                harmful_val,
                harmless_val,
                filters=filters,
                full_grid=full_grid,
                search=search,
                screen=screen,
                finalists=finalists,
                probes=probes,
                batch_size=batch_size,
                progress=progress,
            )
    layer, slot, passed = choose(scores)
    if not passed:
        warnings.warn(
            "No DIM candidate passed the selection filters (KL, induce score); returning the one with "
            "the lowest bypass score. Does the model refuse at all?",
            stacklevel=3,
        )
    provenance = {
        **common,
        "massive_dims_zeroed": zeroed,
        "passed_filters": passed,
        "full_grid": full_grid,
        "search": "full_grid" if full_grid else search,
        "screen": screen if search == "screen" else None,
        "finalists": int(scores.finalist.sum()),
        "probes": probes if search == "attribution" else None,
        "bypass": scores.bypass[layer, slot].item(),
        "induce": scores.induce[layer, slot].item(),
        "kl": scores.kl[layer, slot].item(),
        "scores": scores.as_dict(),
    }
    return Direction(candidates[layer, slot].clone(), layer, positions[slot], "dim", provenance)
