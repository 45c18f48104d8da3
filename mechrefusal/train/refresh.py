"""The re-search attack inside a round: fail-closed's plan when ``refresh_every`` is set (docs/method.md §3).

Fail-closed trains each round against the directions found before it, and the attacker searches the model
after it: the direction a search with nothing ablated finds on the trained model (the "fresh" direction) was
never trained against. Here the trainer plays that attacker during the round: every ``every`` steps it runs
its own search on the model as it is then (nothing ablated), and a share of the ablated harmful examples is
trained with that direction ablated together with the saved ones, as ReFAT re-estimates its directions
during training, but with the trainer's search and filters and on top of the saved set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.interventions import Ablate
from mechrefusal.models import Model
from mechrefusal.train.loop import Groups, split_rows
from mechrefusal.train.search import search_summary

Search = Callable[[Model], Direction]
"""model -> the direction a search with nothing ablated finds on it now (accepted if it passed the filters)."""


class RefreshPlan:
    """Each harmful example plain with probability ``plain_share``; otherwise the saved ``directions``
    ablated, together with the latest refreshed direction with probability ``share``. The refreshed
    direction is searched with ``search`` at the first step and every ``every`` steps after; a search whose
    direction fails the filters keeps the previous one (none yet: those examples get the saved ones only)."""

    def __init__(
        self,
        model: Model,
        directions: DirectionSet,
        search: Search,
        *,
        every: int,
        share: float,
        plain_share: float,
        generator: torch.Generator,
    ) -> None:
        self.model, self.directions, self.search = model, directions, search
        self.every, self.share, self.plain_share, self.generator = every, share, plain_share, generator
        self.saved = Ablate(directions)
        self.with_fresh: Ablate | None = None
        self.searched_at: int | None = None
        self.found: list[dict] = []
        """Each refresh's step, cell and scores (the round's record)."""

    def __call__(self, step: int, n: int) -> Groups:
        if self.searched_at is None or step - self.searched_at >= self.every:
            self._refresh(step)
        share = 0.0 if self.with_fresh is None else self.share  # no passing search yet: the saved ones only
        plain, fresh, saved = split_rows(n, self.plain_share, share, self.generator)
        return [(saved, self.saved), (plain, None), (fresh, self.with_fresh)]

    def _refresh(self, step: int) -> None:
        training = self.model.hf_model.training
        self.model.hf_model.eval()
        try:
            direction = self.search(self.model)
        finally:
            self.model.hf_model.train(training)
        self.searched_at = step
        if direction.provenance["passed_filters"]:
            self.with_fresh = Ablate(DirectionSet([*self.directions, direction]))
        self.found.append({"step": step, **search_summary(direction)})
