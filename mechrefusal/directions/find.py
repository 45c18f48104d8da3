"""`find_direction`: the public entry point to every direction finder (`FINDERS`)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import resolve
from mechrefusal.core.provenance import prompts_sha256, versions
from mechrefusal.directions.dim_finder import DIMSettings
from mechrefusal.directions.finder import FINDERS, DirectionSearch, Finder, make_finder, options_taken
from mechrefusal.directions.rdo import RDOSettings
from mechrefusal.directions.selection import SelectionFilters
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model, check_instructions


def find_direction(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    method: str | Finder = "dim",
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
        method: a finder name or ``"package.module:Class"`` (`FINDERS`), or a finder built already (then
            without finder options here): ``"dim"`` (difference in means at every layer and post-instruction
            position, then the selection of docs/method.md §2.5) or ``"rdo"`` (Refusal Direction Optimisation,
            anchored at the DIM direction's layer and norm, trained on targets for the first
            ``rdo_settings.n_prompts`` prompts).
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
    history and DIM anchor (``provenance["rdo"]``, ``provenance["dim"]``). The options above that a finder's
    constructor does not take must keep their defaults.
    """
    options = dict(
        dim_settings=DIMSettings(
            search=search,
            finalists=finalists or 0,
            screen=screen,
            probes=probes,
            exclude_massive=exclude_massive,
            full_grid=full_grid,
        ),
        dim=dim,
        independent_of=independent_of,
        rdo_settings=rdo_settings,
    )
    if isinstance(method, str):
        finder = make_finder(method, **_checked(method, options))
    else:
        finder = method
        _checked(None, options)
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
    problem = DirectionSearch(
        model,
        harmful,
        harmless,
        harmful_val,
        harmless_val,
        filters,
        sweep_dtype=sweep_dtype,
        orthogonal_to=orthogonal_to,
        context=context,
        batch_size=batch_size,
        progress=progress,
        provenance=common,
    )
    return problem.score(finder(problem))


def _checked(method: str | None, options: dict) -> dict:
    """``options``, after checking that those ``method``'s finder does not take (all, for a finder built
    already) keep find_direction's defaults."""
    defaults = {name: p.default for name, p in inspect.signature(find_direction).parameters.items()}
    defaults["dim_settings"] = DIMSettings()
    taken = options_taken(method) if method is not None else set()
    changed = [
        name
        for name, value in options.items()
        if name not in taken and value is not defaults[name] and value != defaults[name]
    ]
    if changed:
        takers = " or ".join(repr(name) for name in FINDERS.names() if set(changed) <= options_taken(name))
        given = f"method={method!r}" if method is not None else "a finder built already"
        shown = [name for name in changed if name != "dim_settings"]
        if "dim_settings" in changed:  # name the DIM search's keywords that were changed
            shown += [k for k, v in asdict(options["dim_settings"]).items() if v != asdict(DIMSettings())[k]]
        raise SettingError(
            f"{', '.join(name + '=' for name in shown)} apply to method={takers or 'a finder that takes them'} "
            f"only, not to {given}."
        )
    return options
