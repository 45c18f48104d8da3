"""The DIM finder: difference in means at every layer and post-instruction position, then the selection
of docs/method.md §2.5."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

from mechrefusal.core.cli import choice
from mechrefusal.core.directions import Direction, as_direction_set
from mechrefusal.core.errors import SettingError
from mechrefusal.directions.dim import dim_candidates
from mechrefusal.directions.finder import FINDERS, DirectionSearch
from mechrefusal.directions.selection import FINALISTS, SEARCHES, choose, score_candidates
from mechrefusal.models.autocast import autocast


@dataclass
class DIMSettings:
    """The DIM finder's candidate search, as a settings group of the jobs (``--dim-search``, ...); `options`
    gives the keywords of the same names that `find_direction` and the DIM and RDO finders take."""

    search: str = choice("attribution", SEARCHES)
    """How the candidates scored exactly are picked: attribution (first-order estimates of every
    candidate, about the cost of a few forward passes), screen (one forward pass per candidate on a few
    prompts) or exact (every candidate scored)."""
    finalists: int = 0
    """Candidates scored exactly (0: the search's default, 8 for attribution and 16 for screen)."""
    screen: int = 8
    """Validation prompts per set of the screen search."""
    probes: int = 4
    """Random probes (backward passes) of the attribution search's KL estimate."""
    exclude_massive: bool = True
    """Zero the attention sink's massive dimensions in the candidates."""
    full_grid: bool = False
    """Score every candidate on the whole validation sets, induce included (slow; for the score figures)."""

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise SettingError(f"Unknown candidate search {self.search!r}; choose one of {', '.join(SEARCHES)}.")
        if min(self.finalists, self.screen - 1, self.probes - 1) < 0:
            raise SettingError(
                f"DIM search sizes must be positive (finalists may be 0 for the default); got finalists "
                f"{self.finalists}, screen {self.screen}, probes {self.probes}."
            )

    def options(self) -> dict:
        """The keyword arguments of `find_direction` (and of the finders' constructors) these stand for."""
        return {**asdict(self), "finalists": self.finalists or None}


@FINDERS.register("dim")
class DIMFinder:
    """Difference in means plus selection, searched as ``dim_settings`` say."""

    def __init__(self, *, dim_settings: DIMSettings | None = None) -> None:
        self.settings = dim_settings or DIMSettings()

    def __call__(self, search: DirectionSearch) -> Direction:
        model = search.model
        with model.intervene(search.context):
            candidates, zeroed = dim_candidates(
                model,
                search.harmful,
                search.harmless,
                exclude_massive=self.settings.exclude_massive,
                batch_size=search.batch_size,
                progress=search.progress,
            )
            if search.orthogonal_to is not None:
                q = as_direction_set(search.orthogonal_to).basis().to(candidates.device)
                candidates = candidates - (candidates @ q) @ q.T
            positions = model.post_instruction_positions
            with autocast(model, search.sweep_dtype):
                scores = score_candidates(
                    model,
                    candidates,
                    positions,
                    search.harmful_val,
                    search.harmless_val,
                    filters=search.filters,
                    full_grid=self.settings.full_grid,
                    search=self.settings.search,
                    screen=self.settings.screen,
                    finalists=self.settings.finalists or FINALISTS.get(self.settings.search),
                    probes=self.settings.probes,
                    batch_size=search.batch_size,
                    progress=search.progress,
                )
        layer, slot, passed = choose(scores)
        if not passed:
            warnings.warn(
                "No DIM candidate passed the selection filters (KL, induce score); returning the one with "
                "the lowest bypass score. Does the model refuse at all?",
                stacklevel=3,
            )
        provenance = {
            **search.provenance,
            "massive_dims_zeroed": zeroed,
            "passed_filters": passed,
            "full_grid": self.settings.full_grid,
            "search": "full_grid" if self.settings.full_grid else self.settings.search,
            "screen": self.settings.screen if self.settings.search == "screen" else None,
            "finalists": int(scores.finalist.sum()),
            "probes": self.settings.probes if self.settings.search == "attribution" else None,
            "bypass": scores.bypass[layer, slot].item(),
            "induce": scores.induce[layer, slot].item(),
            "kl": scores.kl[layer, slot].item(),
            "scores": scores.as_dict(),
        }
        return Direction(candidates[layer, slot].clone(), layer, positions[slot], "dim", provenance)

    def __repr__(self) -> str:
        return f"DIMFinder(search={self.settings.search!r}, full_grid={self.settings.full_grid})"
