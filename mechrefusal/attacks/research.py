"""The re-search attack: find new refusal directions on the attacked model and ablate them with its saved
ones.

An attacker who knows the defence runs the toolkit's own direction search on the defended model: DIM
(or RDO, ``finder="rdo"``) on the bundled harmful/harmless train splits, scored on the val splits, with
the saved directions ablated during the search (``conditioned=True``; without, the search sees the
plain model) and every direction it found before ablated too, each search in the orthogonal complement
of what is ablated, the trainer's round search. It repeats ``m`` times (the budget). Test case ``k``
(k = 1..m) is the behaviour's text answered with the saved directions and the first ``k`` found ones
ablated; its ``info`` carries ``k`` and the found directions (layer, position, vector), from which
`generation_intervention` rebuilds the ablation. The search depends on the model, its saved directions,
the campaign's intervention and the settings, not on the behaviour, so it runs once (cached in memory and
on disk, so a resumed campaign does not search again) and uses its own ``seed`` setting (RDO's example order).

`research_curve` reports what the attack costs and buys: judged refusal on the harmful test split and
first-token KL on the harmless one against the number of found directions ablated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mechrefusal import data
from mechrefusal.attacks.base import ATTACKS, Behaviour, TestCase, cache_settings, preset_fields
from mechrefusal.attacks.found import attacker_filters, cached, from_info, search_key, to_info
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import check_dtype
from mechrefusal.directions import RDOSettings, find_direction
from mechrefusal.interventions import Ablate, Interventions
from mechrefusal.measure.evaluation import refusal_rate
from mechrefusal.measure.judges import Judge
from mechrefusal.measure.metrics import first_token_kl
from mechrefusal.models import Model
from mechrefusal.models.hooks import flatten

FINDERS = ("dim", "rdo")
PRESETS: dict[str, dict[str, Any]] = {"cpu": {}, "harmbench": {"m": 4, "n_prompts": 128, "n_val": 32}}


@ATTACKS.register("research")
@dataclass
class ReSearch:
    """Re-search ``m`` new directions and ablate them with the saved ones; defaults are the ``"cpu"`` preset
    (two DIM searches of the trainer's size, about two of its rounds' search time)."""

    m: int = 2
    """Directions searched for, one after the other (the budget)."""
    finder: str = "dim"
    """``"dim"`` or ``"rdo"`` (RDO anchored at a DIM search, the default `RDOSettings` at ``dtype``)."""
    conditioned: bool = True
    """Search with the saved directions ablated (the found ones are always ablated in later searches)."""
    n_prompts: int = 64
    """Train prompts per set (harmful; harmless) the candidates are computed from."""
    n_val: int = 16
    """Validation prompts per set the candidates are scored on."""
    max_kl: float | None = None
    """The selection's first-token KL filter (`SelectionFilters`); None: the filters the saved directions
    were searched with (`attacker_filters`). A direction that passes no filter is still used,
    ``info["passed_filters"]`` says so."""
    seed: int = 0
    """RDO's example order (the search is shared by all behaviours, so not the campaign's seed)."""
    dtype: str = "auto"
    """Compute dtype of the search (`mechrefusal.core.precision`)."""
    caveat: str = field(init=False, default="white-box: new directions found on the defended model and ablated")
    fixed_edit: ClassVar[bool] = True
    """Its ablation is the same for every prompt: the campaign measures its harmless KL."""
    variant: ClassVar[str] = "k"
    """A row per number of found directions ablated in the scoreboard."""

    def __post_init__(self) -> None:
        for name in ("m", "n_prompts", "n_val"):
            if getattr(self, name) < 1:
                raise SettingError(f"The re-search attack's {name} must be at least 1, got {getattr(self, name)}.")
        if self.finder not in FINDERS:
            raise SettingError(f"Unknown re-search finder {self.finder!r}; choose one of {', '.join(FINDERS)}.")
        if self.max_kl is not None and not self.max_kl > 0:
            raise SettingError(f"The re-search attack's max_kl must be positive, got {self.max_kl}.")
        check_dtype(self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ReSearch:
        """``"cpu"`` (the defaults) or ``"harmbench"`` (four directions, twice the prompts)."""
        return cls(**preset_fields("re-search", PRESETS, name, overrides))

    def settings(self) -> dict[str, Any]:
        return cache_settings(self)

    def search(self, model: Model, intervention: Interventions = None) -> list[Direction]:
        """The ``m`` directions found on ``model`` (under ``intervention``), searched once (`cached`)."""
        return list(cached(search_key(model, intervention, self.settings()), lambda: self._search(model, intervention)))

    def _search(self, model: Model, intervention: Interventions) -> DirectionSet:
        saved = list(model.directions or [])
        harmful, harmless = data.load("harmful", "train"), data.load("harmless", "train")
        if self.n_prompts > min(len(harmful), len(harmless)):
            raise SettingError(
                f"The re-search attack's n_prompts={self.n_prompts} exceeds the bundled train splits "
                f"({len(harmful)} harmful, {len(harmless)} harmless prompts)."
            )
        rdo_settings = RDOSettings(dtype=self.dtype, seed=self.seed) if self.finder == "rdo" else RDOSettings()
        found: list[Direction] = []
        for _ in range(self.m):
            ablated = (saved if self.conditioned else []) + found
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a failed filter is reported in the case's info
                direction = find_direction(
                    model,
                    harmful[: self.n_prompts],
                    harmless[: self.n_prompts],
                    method=self.finder,
                    harmful_val=data.load("harmful", "val"),
                    harmless_val=data.load("harmless", "val"),
                    n_val=self.n_val,
                    filters=attacker_filters(model, self.max_kl),
                    orthogonal_to=DirectionSet(ablated) if ablated else None,
                    context=flatten(intervention, Ablate(ablated) if ablated else None) or None,
                    sweep_dtype=self.dtype,
                    rdo_settings=rdo_settings,
                    progress=False,
                )
            found.append(direction)
        return DirectionSet(found)

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """``m`` test cases, the ``k``-th answered with the saved and the first ``k`` found directions ablated."""
        found = self.search(model, intervention)
        return [
            TestCase(
                behaviour.text,
                {
                    "k": k,
                    "saved": len(model.directions or []),
                    "passed_filters": [bool(d.provenance.get("passed_filters")) for d in found[:k]],
                    "found": to_info(found[:k]),
                },
            )
            for k in range(1, self.m + 1)
        ]

    def generation_intervention(self, model: Model, case: TestCase) -> Interventions:
        """The saved directions and the case's found ones, ablated together."""
        return Ablate([*(model.directions or []), *from_info(case.info["found"])])


def research_curve(
    model: Model,
    attack: ReSearch | None = None,
    *,
    n: int = 64,
    judge: Judge | None = None,
    max_new_tokens: int = 32,
    dtype: str = "float32",
    intervention: Interventions = None,
) -> list[dict[str, Any]]:
    """Per number ``k`` of found directions ablated (0..m, the saved ones always ablated too): judged
    refusal on the first ``n`` harmful test prompts and the mean first-token KL on the first ``n``
    harmless ones (against the plain model), with the found directions'
    layer, position and whether they passed the filters."""
    attack = attack or ReSearch()
    if n < 1:
        raise SettingError(f"research_curve needs n of at least 1, got {n}.")
    found = attack.search(model, intervention)
    harmful, harmless = data.load("harmful", "test")[:n], data.load("harmless", "test")[:n]
    saved = list(model.directions or [])
    rows = []
    for k in range(attack.m + 1):
        ablated = saved + found[:k]
        added = flatten(intervention, Ablate(ablated) if ablated else None) or None
        rows.append(
            {
                "k": k,
                "ablated": len(ablated),
                "refusal": refusal_rate(
                    model, harmful, judge=judge, intervention=added, max_new_tokens=max_new_tokens, dtype=dtype
                ),
                "harmless_kl": first_token_kl(model, harmless, added).mean().item() if ablated else 0.0,
                "found": None
                if k == 0
                else {
                    "layer": found[k - 1].layer,
                    "position": found[k - 1].position,
                    "passed_filters": bool(found[k - 1].provenance.get("passed_filters")),
                },
            }
        )
    return rows
