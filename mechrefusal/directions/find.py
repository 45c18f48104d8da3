"""`find_direction`: the public entry point to every direction finder."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from mechrefusal.directions.dim import dim_candidates
from mechrefusal.directions.direction import Direction, DirectionSet, as_direction_set
from mechrefusal.directions.selection import SelectionFilters, choose, score_candidates
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model
from mechrefusal.precision import autocast
from mechrefusal.provenance import prompts_sha256, versions

METHODS = ("dim",)


def find_direction(model: Model, harmful: Sequence[str], harmless: Sequence[str], *, method: str = "dim",
                   harmful_val: Sequence[str] | None = None, harmless_val: Sequence[str] | None = None,
                   n_val: int = 32, filters: SelectionFilters = SelectionFilters(),
                   exclude_massive: bool = True, full_grid: bool = False, screen: int | None = 8,
                   finalists: int = 16, sweep_dtype: str = "bfloat16",
                   orthogonal_to: Direction | DirectionSet | None = None, context: Interventions = None,
                   batch_size: int = 16, progress: bool = True) -> Direction:
    """Find the refusal direction of ``model``.

    Args:
        harmful, harmless: prompts the candidates are computed from (e.g. the train splits).
        method: ``"dim"`` (difference in means at every layer and post-instruction position, then the
            selection of METHOD.md §2).
        harmful_val, harmless_val: prompts the candidates are scored on (default: the first ``n_val``
            of ``harmful`` and ``harmless``); at most ``n_val`` of each are used.
        filters: the selection filters (KL, induce, pruned last layers).
        exclude_massive: zero the attention sink's massive dimensions in the candidates.
        full_grid: score every candidate on the whole validation sets, induce included (slow; no screening).
        screen, finalists: score every candidate on the first ``screen`` validation prompts of each set
            first, then only ``finalists`` of them on the whole sets (``screen=None``: no screening).
        sweep_dtype: compute dtype of the candidate sweep (``"bfloat16"`` autocast or ``"float32"``);
            the means that define the candidates are always accumulated from float32 activations.
        orthogonal_to: search only the orthogonal complement of these directions.
        context: interventions active during the whole search (e.g. ``Ablate(earlier_directions)``
            to find the direction a model uses once the earlier ones are gone).

    The returned direction's ``provenance`` holds the model, data sizes, versions, the chosen scores
    and the whole score grid (``provenance["scores"]``).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown direction finder {method!r}; choose one of {', '.join(METHODS)}.")
    if not harmful or not harmless:
        raise ValueError("find_direction needs at least one harmful and one harmless prompt.")
    harmful_val = list(harmful_val if harmful_val is not None else harmful)[:n_val]
    harmless_val = list(harmless_val if harmless_val is not None else harmless)[:n_val]
    with model.intervene(context):
        candidates, zeroed = dim_candidates(model, harmful, harmless, exclude_massive=exclude_massive,
                                            batch_size=batch_size, progress=progress)
        if orthogonal_to is not None:
            q = as_direction_set(orthogonal_to).basis().to(candidates.device)
            candidates = candidates - (candidates @ q) @ q.T
        positions = model.post_instruction_positions
        with autocast(model, sweep_dtype):
            scores = score_candidates(model, candidates, positions, harmful_val, harmless_val, filters=filters,
                                      full_grid=full_grid, screen=screen, finalists=finalists,
                                      batch_size=batch_size, progress=progress)
    layer, slot, passed = choose(scores)
    if not passed:
        warnings.warn("No DIM candidate passed the selection filters (KL, induce score); returning the one with "
                      "the lowest bypass score. Does the model refuse at all?", stacklevel=2)
    provenance = {
        "model": model.spec, "n_harmful": len(harmful), "n_harmless": len(harmless),
        "data_sha256": prompts_sha256([*harmful, "\0", *harmless, "\0", *harmful_val, "\0", *harmless_val]),
        "n_harmful_val": len(harmful_val), "n_harmless_val": len(harmless_val),
        "massive_dims_zeroed": zeroed, "filters": vars(filters), "passed_filters": passed,
        "sweep_dtype": sweep_dtype, "full_grid": full_grid, "screen": screen, "finalists": finalists, "orthogonal_to": orthogonal_to is not None,
        "bypass": scores.bypass[layer, slot].item(), "induce": scores.induce[layer, slot].item(),
        "kl": scores.kl[layer, slot].item(), "scores": scores.as_dict(), "versions": versions(),
    }
    return Direction(candidates[layer, slot].clone(), layer, positions[slot], "dim", provenance)
