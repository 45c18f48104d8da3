"""The cone attack: a k-dimensional refusal cone learned with RDO on the defended model, its whole span
ablated together with the saved directions.

The DIM anchor is searched on the bundled train splits (scored on val), then `rdo_cone` learns the
cone's orthonormal basis from it; with ``conditioned`` (default) both run with the saved directions
ablated and in their orthogonal complement, without it on the plain model. The one test case per
behaviour is its text answered with the saved directions and the cone's span ablated; ``info["cone"]``
carries the basis, from which `generation_intervention` rebuilds the ablation. As with the re-search
attack, the search runs once per model, intervention and settings, with its own ``seed``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mechrefusal import data
from mechrefusal.attacks.base import ATTACKS, Behaviour, TestCase, cache_settings, preset_fields
from mechrefusal.attacks.found import attacker_filters, cached, from_info, search_key, to_info
from mechrefusal.core.directions import DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import check_dtype
from mechrefusal.directions import RDOSettings, find_direction, rdo_cone
from mechrefusal.interventions import Ablate, Interventions
from mechrefusal.models import Model
from mechrefusal.models.hooks import flatten

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "harmbench": {"k": 5, "n_prompts": 128, "n_val": 32, "n_targets": 32, "steps": 48},
}


@ATTACKS.register("cone")
@dataclass
class ConeAttack:
    """Ablate an RDO cone of dimension ``k`` with the saved directions; defaults are the ``"cpu"`` preset
    (one DIM search and RDO's default budget, ``steps`` optimiser steps on ``n_targets`` prompts per set)."""

    k: int = 3
    """The cone's dimension (the paper's cones: 2 to 5)."""
    conditioned: bool = True
    """Search with the saved directions ablated and orthogonally to them."""
    n_prompts: int = 64
    """Train prompts per set the DIM anchor's candidates are computed from."""
    n_val: int = 16
    """Validation prompts per set the anchor's candidates are scored on."""
    n_targets: int = 16
    """Prompts per set given RDO targets (`RDOSettings.n_prompts`)."""
    steps: int = 24
    """RDO optimiser steps."""
    max_kl: float | None = None
    """The anchor selection's first-token KL filter; None: the filters the saved directions were searched
    with (`attacker_filters`)."""
    seed: int = 0
    """The cone's random start and example order (shared by all behaviours, so not the campaign's seed)."""
    dtype: str = "auto"
    """Compute dtype of the search (`mechrefusal.core.precision`)."""
    caveat: str = field(init=False, default="white-box: an RDO cone found on the defended model and ablated")
    fixed_edit: ClassVar[bool] = True
    """Its ablation is the same for every prompt: the campaign measures its harmless KL."""

    def __post_init__(self) -> None:
        for name in ("k", "n_prompts", "n_val", "n_targets", "steps"):
            if getattr(self, name) < 1:
                raise SettingError(f"The cone attack's {name} must be at least 1, got {getattr(self, name)}.")
        if self.max_kl is not None and not self.max_kl > 0:
            raise SettingError(f"The cone attack's max_kl must be positive, got {self.max_kl}.")
        check_dtype(self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ConeAttack:
        """``"cpu"`` (the defaults) or ``"harmbench"`` (a 5-dimensional cone, twice the prompts and steps)."""
        return cls(**preset_fields("cone-attack", PRESETS, name, overrides))

    def settings(self) -> dict[str, Any]:
        return cache_settings(self)

    def check(self, model: Model) -> None:
        """One sentence if the cone is wider than ``model``."""
        if self.k > model.d_model:
            raise SettingError(
                f"A cone of dimension {self.k} does not fit in this model's width d_model={model.d_model}."
            )

    def search(self, model: Model, intervention: Interventions = None) -> DirectionSet:
        """The cone's basis on ``model`` (under ``intervention``), searched once (`cached`)."""
        self.check(model)
        return cached(search_key(model, intervention, self.settings()), lambda: self._search(model, intervention))

    def _search(self, model: Model, intervention: Interventions) -> DirectionSet:
        saved = list(model.directions or []) if self.conditioned else []
        orthogonal_to = DirectionSet(saved) if saved else None
        context = flatten(intervention, Ablate(saved) if saved else None) or None
        harmful, harmless = (
            data.load("harmful", "train")[: self.n_prompts],
            data.load("harmless", "train")[: self.n_prompts],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an anchor that fails the filters still anchors the cone
            anchor = find_direction(
                model,
                harmful,
                harmless,
                harmful_val=data.load("harmful", "val"),
                harmless_val=data.load("harmless", "val"),
                n_val=self.n_val,
                filters=attacker_filters(model, self.max_kl),
                orthogonal_to=orthogonal_to,
                context=context,
                sweep_dtype=self.dtype,
                progress=False,
            )
        settings = RDOSettings(n_prompts=self.n_targets, steps=self.steps, dtype=self.dtype, seed=self.seed)
        return rdo_cone(
            model,
            harmful,
            harmless,
            anchor,
            self.k,
            settings=settings,
            orthogonal_to=orthogonal_to,
            context=context,
            progress=False,
        )

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """One test case: the behaviour's text, answered with the saved directions and the cone ablated."""
        cone = self.search(model, intervention)
        return [TestCase(behaviour.text, {"k": self.k, "saved": len(model.directions or []), "cone": to_info(cone)})]

    def generation_intervention(self, model: Model, case: TestCase) -> Interventions:
        """The saved directions and the case's cone, ablated together."""
        return Ablate([*(model.directions or []), *from_info(case.info["cone"])])
