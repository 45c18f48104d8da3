"""Fail-closed (progressive ablation) training (docs/method.md §3)."""

from __future__ import annotations

import torch

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.interventions import Ablate, Interventions
from mechrefusal.models import Model
from mechrefusal.train.loop import Plan, ablate_all, ablate_some
from mechrefusal.train.methods.base import Method
from mechrefusal.train.refresh import RefreshPlan
from mechrefusal.train.search import fresh_candidates, trainer_search
from mechrefusal.train.subspace import SubspacePlan


class FailClosed(Method):
    """Each round trains refusal with every direction found so far ablated, then searches the next one;
    training stops when a search finds none. ``plain_share``: the probability that a harmful example is
    trained without the ablation; ``ablated_utility_share``: that a harmless example's utility KL is taken
    with the directions ablated (so that the ablation itself cannot become a cue to refuse);
    ``subspace_share``: that an ablated one has a random subspace of the span ablated instead
    (`SubspacePlan`, with ``subspace_fresh`` fresh DIM candidates in the span); ``refresh_every``: search the
    model with nothing ablated every so many steps and ablate that direction with the saved ones on a share
    ``refresh_share`` of the ablated examples (`RefreshPlan`); ``consolidation_rounds``: the last rounds
    search nothing and train again against the saved directions."""

    needs_direction = True

    def safety_plan(
        self, model: Model, directions: DirectionSet, *, round_index: int, generator: torch.Generator
    ) -> Plan:
        plain_share = self.settings.plain_share
        if self.settings.subspace_share:
            fresh = self.settings.subspace_fresh
            candidates = fresh_candidates(model, fresh, self.settings, progress=False) if fresh else []
            return SubspacePlan(
                directions, candidates, share=self.settings.subspace_share, plain_share=plain_share, generator=generator
            )
        if self.settings.refresh_every:
            return RefreshPlan(
                model,
                directions,
                lambda now: trainer_search(now, DirectionSet(), self.settings, progress=False),
                every=self.settings.refresh_every,
                share=self.settings.refresh_share,
                plain_share=plain_share,
                generator=generator,
            )
        if plain_share:
            return lambda step, n: ablate_some(Ablate(directions), 1 - plain_share, n, generator)
        return ablate_all(Ablate(directions))

    def utility_plan(self, directions: DirectionSet, *, round_index: int, generator: torch.Generator) -> Plan | None:
        share = self.settings.ablated_utility_share
        if not share:
            return None
        return lambda step, n: ablate_some(Ablate(directions), share, n, generator)

    def val_intervention(self, directions: DirectionSet, *, round_index: int) -> Interventions:
        return Ablate(directions)

    def searches_after(self, round_index: int) -> bool:
        return round_index <= self.settings.rounds - self.settings.consolidation_rounds

    def stops_after(self, round_index: int, found: Direction | None) -> bool:
        return found is None and self.searches_after(round_index)
