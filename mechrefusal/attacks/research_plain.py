"""The re-search attack searching the plain defended model: ``research`` with ``conditioned=False``.

``research`` searches with the saved directions ablated: the trainer's own next-round search, so the
direction it finds is the one the next round would train against. An attacker owes the defence no such
courtesy. On the cpu preset's DeepRefusal checkpoint (docs/results.md, session 21) the conditioned search's
direction, ablated with the saved one, left 92% refusal on 64 harmful test prompts, while the direction the
same search finds on the plain model, ablated alone, left 20%. Its own name gives it its own rows in a
campaign and the scoreboard beside ``research``; its test cases ablate the saved directions and the found
ones together, as ``research``'s do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mechrefusal.attacks.base import ATTACKS
from mechrefusal.attacks.research import ReSearch


@ATTACKS.register("research-plain")
@dataclass
class PlainReSearch(ReSearch):
    """Re-search ``m`` new directions on the model with nothing of its own ablated during the search, and ablate
    them with the saved ones."""

    conditioned: bool = False
    caveat: str = field(
        init=False, default="white-box: new directions found on the plain defended model, ablated with the saved ones"
    )
