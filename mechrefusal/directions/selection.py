"""Choosing one DIM candidate on validation prompts (docs/method.md §2.5).

For each candidate (layer, position): the *bypass* score is the mean refusal score of harmful prompts
with the candidate ablated everywhere; the *induce* score is the mean refusal score of harmless
prompts with the raw candidate added at its layer; the *KL* is the mean first-token KL(base || ablated)
on harmless prompts. Candidates in the last 20% of layers, with KL above 0.1 or with a negative induce
score are dropped; the lowest bypass score wins.

Only a few candidates are scored exactly (``finalists``); the search picks them from estimates of every
candidate's bypass and KL: first-order attribution estimates (``"attribution"``, one forward and a few
backward passes, see `attribution`) or exact scores on a few screening prompts (``"screen"``, one
ablated forward pass per candidate). ``"exact"`` scores every candidate exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.core.directions import Direction
from mechrefusal.core.errors import SettingError
from mechrefusal.directions.attribution import estimate_candidates
from mechrefusal.interventions import Ablate, Add
from mechrefusal.measure.metrics import kl_divergence, last_token_logprobs, refusal_token_ids, score_from_logprobs
from mechrefusal.models import Model

SEARCHES = ("attribution", "screen", "exact")
FINALISTS: dict[str, int] = {"attribution": 8, "screen": 16}
"""Default number of candidates scored exactly, per search (the exact search scores every one)."""


@dataclass
class SelectionFilters:
    """The three filters; every field is documented in the module docstring."""

    max_kl: float = 0.1
    min_induce: float = 0.0
    prune_layer_fraction: float = 0.2

    @classmethod
    def loosest(cls, directions: Iterable[Direction] | None, **given: float | None) -> SelectionFilters:
        """Each filter at its loosest among those ``directions`` were searched with (their provenance's
        ``filters``), or the defaults where none is recorded: a search for a direction the defender missed
        is at least as loose as the defender's. A filter ``given`` (not None) replaces its recorded value."""
        recorded = [d.provenance["filters"] for d in directions or [] if isinstance(d.provenance.get("filters"), dict)]
        default = cls()
        loosest = (
            cls(
                max_kl=max(f.get("max_kl", default.max_kl) for f in recorded),
                min_induce=min(f.get("min_induce", default.min_induce) for f in recorded),
                prune_layer_fraction=min(f.get("prune_layer_fraction", default.prune_layer_fraction) for f in recorded),
            )
            if recorded
            else default
        )
        return replace(loosest, **{name: value for name, value in given.items() if value is not None})

    def passes(self, layer: int, n_layers: int, kl: float, induce: float) -> bool:
        """Whether one direction at ``layer`` with these scores passes all three filters."""
        return layer < (1 - self.prune_layer_fraction) * n_layers and kl <= self.max_kl and induce >= self.min_induce


@dataclass(repr=False)
class CandidateScores:
    """The score grid over candidates; NaN where a candidate's layer was pruned before scoring. Only
    ``finalist`` cells were scored on the whole validation sets (the others on the screening prompts, or
    not at all after an attribution search, whose estimates are ``estimated_bypass`` and ``estimated_kl``)."""

    bypass: Float[Tensor, "layer pos"]
    induce: Float[Tensor, "layer pos"]
    kl: Float[Tensor, "layer pos"]
    passed: Bool[Tensor, "layer pos"]
    finalist: Bool[Tensor, "layer pos"]
    positions: list[int]
    baseline_harmful: float
    baseline_harmless: float
    estimated_bypass: Float[Tensor, "layer pos"] | None = None
    estimated_kl: Float[Tensor, "layer pos"] | None = None
    screen_fallback: bool = False

    def __repr__(self) -> str:
        layers, positions = self.bypass.shape
        best = ""
        if self.passed.any():
            bypass = torch.where(self.passed, self.bypass, torch.inf)
            layer, slot = divmod(int(bypass.argmin()), positions)
            best = f", best bypass={bypass[layer, slot]:.3g} at layer {layer} position {self.positions[slot]}"
        return (
            f"CandidateScores(grid={layers}x{positions}, finalists={int(self.finalist.sum())}, "
            f"passed={int(self.passed.sum())}{best}, baseline harmful={self.baseline_harmful:.3g} "
            f"harmless={self.baseline_harmless:.3g})"
        )

    def as_dict(self) -> dict:
        estimates = (
            {}
            if self.estimated_bypass is None or self.estimated_kl is None
            else {
                "estimated_bypass": self.estimated_bypass.tolist(),
                "estimated_kl": self.estimated_kl.tolist(),
                "screen_fallback": self.screen_fallback,
            }
        )
        return {
            "bypass": self.bypass.tolist(),
            "induce": self.induce.tolist(),
            "kl": self.kl.tolist(),
            "passed": self.passed.tolist(),
            "finalist": self.finalist.tolist(),
            "positions": self.positions,
            "baseline_harmful": self.baseline_harmful,
            "baseline_harmless": self.baseline_harmless,
            **estimates,
        }


def score_candidates(
    model: Model,
    candidates: Float[Tensor, "layer pos d_model"],
    positions: list[int],
    harmful_val: Sequence[str],
    harmless_val: Sequence[str],
    *,
    filters: SelectionFilters = SelectionFilters(),
    full_grid: bool = False,
    search: str = "attribution",
    screen: int = 8,
    finalists: int | None = None,
    probes: int = 4,
    batch_size: int = 16,
    progress: bool = True,
) -> CandidateScores:
    """Bypass and KL for candidates outside the pruned last layers; induce, in bypass order, for those
    within the KL filter until one passes.

    Unless ``search="exact"`` or ``full_grid``, only ``finalists`` candidates (default: `FINALISTS`)
    are scored on the whole validation sets: the lowest estimated bypass scores among candidates whose
    estimated KL is within twice the KL filter, then the lowest overall. The estimates come from
    ``search="attribution"`` (with ``probes`` Hutchinson probes for the KL) or ``"screen"`` (exact scores
    on the first ``screen`` prompts of each set, kept in the grid for the others). The others are never
    chosen (``finalist`` is False). ``full_grid`` scores every candidate on the whole sets, induce included.

    When no attribution finalist passes the filters *and* the estimates proved uninformative (no
    candidate estimated to lower the harmful refusal score, or no finalist that lowers it), the screen
    runs after all (``screen_fallback``): first-order estimates can rank badly where ablation is far from
    linear (on a toy model after a few fail-closed training steps every estimated bypass lay above the
    baseline, and no finalist passed where the screen found a passing candidate). Where the finalists do
    lower refusal but fail the KL or induce filter, as on the untrained SmolLM2 under the default filters
    (the screen found no passing candidate there either), the screen would cost 144 passes for nothing.
    """
    if search not in SEARCHES:
        raise SettingError(f"Unknown candidate search {search!r}; choose one of {', '.join(SEARCHES)}.")
    n_finalists = finalists if finalists is not None else FINALISTS.get(search, 0)
    tokens = refusal_token_ids(model)
    harmful_base = score_from_logprobs(last_token_logprobs(model, harmful_val, batch_size=batch_size), tokens)
    harmless_logprobs = last_token_logprobs(model, harmless_val, batch_size=batch_size)
    n_layers, n_positions = candidates.shape[:2]
    grid = {key: torch.full((n_layers, n_positions), float("nan")) for key in ("bypass", "induce", "kl")}
    kept_layers = [layer for layer in range(n_layers) if layer < (1 - filters.prune_layer_fraction) * n_layers]
    norms = candidates.norm(dim=-1)
    # A zero candidate (at block 0 every prompt has the same post-instruction tokens) ablates nothing, yet its
    # estimated KL of 0 put it first among the attribution finalists under a tight KL filter.
    cells = [
        (layer, slot) for layer in kept_layers for slot in range(n_positions) if norms[layer, slot] > 1e-6 * norms.max()
    ]

    def candidate(layer: int, slot: int) -> Direction:
        return Direction(candidates[layer, slot], layer, positions[slot], "dim")

    def bypass_and_kl(chosen: list[tuple[int, int]], harmful: Sequence[str], n_harmless: int, desc: str) -> None:
        prompts = list(harmful) + list(harmless_val[:n_harmless])
        for layer, slot in tqdm(chosen, desc=desc, disable=not progress, leave=False):
            ablated = last_token_logprobs(
                model, prompts, intervention=Ablate(candidate(layer, slot)), batch_size=batch_size
            )
            grid["bypass"][layer, slot] = score_from_logprobs(ablated[: len(harmful)], tokens).mean()
            grid["kl"][layer, slot] = kl_divergence(harmless_logprobs[:n_harmless], ablated[len(harmful) :]).mean()

    finalist = torch.zeros(n_layers, n_positions, dtype=torch.bool)
    estimated = None
    if search != "exact" and not full_grid and len(cells) > n_finalists:
        if search == "screen":
            bypass_and_kl(cells, harmful_val[:screen], screen, "screen bypass and KL")
            ranking = grid
        else:
            vectors = torch.stack([candidates[cell] for cell in cells])
            bypass, kl = estimate_candidates(
                model, vectors, harmful_val, harmless_val, probes=probes, batch_size=batch_size
            )
            estimated = {key: torch.full((n_layers, n_positions), float("nan")) for key in ("bypass", "kl")}
            for i, cell in enumerate(cells):
                estimated["bypass"][cell], estimated["kl"][cell] = bypass[i], kl[i]
            ranking = estimated
        by_bypass = sorted(cells, key=lambda cell: ranking["bypass"][cell].item())
        near = [cell for cell in by_bypass if ranking["kl"][cell] <= 2 * filters.max_kl]
        cells = list(dict.fromkeys(near + by_bypass))[:n_finalists]
    bypass_and_kl(cells, harmful_val, len(harmless_val), "bypass and KL")
    for cell in cells:
        finalist[cell] = True
    cells.sort(key=lambda cell: grid["bypass"][cell].item())
    tried = cells if full_grid else [cell for cell in cells if grid["kl"][cell] <= filters.max_kl]
    for layer, slot in tqdm(tried, desc="induce", disable=not progress, leave=False):
        added = last_token_logprobs(
            model, harmless_val, intervention=Add(candidate(layer, slot)), batch_size=batch_size
        )
        grid["induce"][layer, slot] = score_from_logprobs(added, tokens).mean()
        if not full_grid and grid["induce"][layer, slot] >= filters.min_induce:
            break
    passed = finalist & (grid["kl"] <= filters.max_kl) & (grid["induce"] >= filters.min_induce)  # NaN: False
    baseline = harmful_base.mean().item()
    uninformative = estimated is not None and not (
        (estimated["bypass"] < baseline).any() and (grid["bypass"][finalist] < baseline).any()
    )
    if uninformative and estimated is not None and not passed.any():
        scores = score_candidates(
            model,
            candidates,
            positions,
            harmful_val,
            harmless_val,
            filters=filters,
            search="screen",
            screen=screen,
            batch_size=batch_size,
            progress=progress,
        )
        scores.estimated_bypass, scores.estimated_kl = estimated["bypass"], estimated["kl"]
        scores.screen_fallback = True
        return scores
    return CandidateScores(
        grid["bypass"],
        grid["induce"],
        grid["kl"],
        passed,
        finalist,
        positions,
        baseline,
        score_from_logprobs(harmless_logprobs, tokens).mean().item(),
        *((estimated["bypass"], estimated["kl"]) if estimated else ()),
    )


def choose(scores: CandidateScores) -> tuple[int, int, bool]:
    """(layer, position slot, passed filters) of the lowest bypass score among candidates that pass the
    filters; when none passes, the lowest bypass score among the finalists, flagged as not passing."""
    pool = scores.passed if scores.passed.any() else scores.finalist
    masked = torch.where(pool, scores.bypass, torch.tensor(float("inf")))
    flat = int(masked.argmin())
    layer, slot = divmod(flat, masked.shape[1])
    return layer, slot, bool(scores.passed.any())


def score_direction(
    model: Model, direction: Direction, harmful_val: Sequence[str], harmless_val: Sequence[str], *, batch_size: int = 16
) -> dict[str, float]:
    """The bypass, induce and KL scores of one direction (three passes over the validation prompts)."""
    tokens = refusal_token_ids(model)
    base = last_token_logprobs(model, harmless_val, batch_size=batch_size)
    ablated = last_token_logprobs(
        model, list(harmful_val) + list(harmless_val), intervention=Ablate(direction), batch_size=batch_size
    )
    added = last_token_logprobs(model, harmless_val, intervention=Add(direction), batch_size=batch_size)
    return {
        "bypass": score_from_logprobs(ablated[: len(harmful_val)], tokens).mean().item(),
        "induce": score_from_logprobs(added, tokens).mean().item(),
        "kl": kl_divergence(base, ablated[len(harmful_val) :]).mean().item(),
    }
