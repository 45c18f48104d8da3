"""The direction attack: the plain behaviour answered with the model's saved directions ablated.

One test case per saved direction (``info["which"]``: ``"d0"``, ``"d1"``, ...) and, with two or more, one
with all of them ablated (``"all"``): an attacker who knows the defence's directions removes them. The
prompt is the behaviour's text unchanged; `generation_intervention` rebuilds the ablation from ``which``
and the model's saved directions when the campaign answers the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from mechrefusal.attacks.base import ATTACKS, Behaviour, TestCase, cache_settings, preset_fields
from mechrefusal.attacks.found import saved_directions
from mechrefusal.core.errors import SettingError
from mechrefusal.core.precision import check_dtype
from mechrefusal.interventions import Ablate, Interventions
from mechrefusal.models import Model

NAME = "directions"


@ATTACKS.register(NAME)
@dataclass
class DirectionsAttack:
    """Ablate each saved direction alone and all of them together; it computes nothing, so the budget is
    the number of saved directions and both presets are the same attack."""

    single: bool = True
    """One test case per saved direction."""
    together: bool = True
    """One test case with all saved directions ablated (only when there are two or more)."""
    dtype: str = "auto"
    """Unused (nothing is computed before generation, which runs in the campaign's dtype); kept so every
    attack takes the same options."""
    caveat: str = field(init=False, default="white-box: ablates the defence's own saved directions")
    fixed_edit: ClassVar[bool] = True
    """Its ablation is the same for every prompt: the campaign measures its harmless KL."""
    variant: ClassVar[str] = "which"
    """A row per ablation in the scoreboard (``d0``, ``d1``, ..., ``all``)."""

    def __post_init__(self) -> None:
        if not (self.single or self.together):
            raise SettingError("The directions attack needs single or together (or both) to make test cases.")
        check_dtype(self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DirectionsAttack:
        """``"cpu"`` or ``"harmbench"``: the same attack (it has no search budget)."""
        return cls(**preset_fields("directions-attack", {"cpu": {}, "harmbench": {}}, name, overrides))

    def settings(self) -> dict[str, Any]:
        return cache_settings(self)

    def check(self, model: Model) -> None:
        """One sentence if ``model`` has no saved directions, or only one where only ``all`` is asked for."""
        if len(saved_directions(model, NAME)) < 2 and not self.single:
            raise SettingError(
                "The directions attack with single=False needs two or more saved directions; this model has one."
            )

    def run(
        self, model: Model, behaviour: Behaviour, *, intervention: Interventions = None, seed: int = 0
    ) -> list[TestCase]:
        """The behaviour's text once per ablation: ``d0``, ``d1``, ... and ``all``."""
        self.check(model)
        saved = saved_directions(model, NAME)
        which = [f"d{i}" for i in range(len(saved))] if self.single else []
        if self.together and len(saved) > 1:
            which.append("all")
        return [TestCase(behaviour.text, {"which": name}) for name in which]

    def generation_intervention(self, model: Model, case: TestCase) -> Interventions:
        """The ablation ``case.info["which"]`` names."""
        saved = saved_directions(model, NAME)
        which = case.info["which"]
        return Ablate(saved if which == "all" else saved[int(which[1:])])
