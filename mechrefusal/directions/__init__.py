"""Refusal directions: the finders (difference in means, attribution estimates, selection, RDO,
representational independence), behind one entry point `find_direction`, and RDO's k-dimensional cones
(`rdo_cone`); the `Direction` / `DirectionSet` containers live in `core` and are re-exported here.
The method is in docs/method.md §2.

Add a finder: one module here that returns a `Direction` with its provenance, its name in ``find.METHODS``
with a branch in `find_direction`, and one test on the toy model (``tests/toy.py``).
"""

from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.directions.dim_finder import DIMFinder, DIMSettings
from mechrefusal.directions.find import find_direction
from mechrefusal.directions.finder import FINDERS, DirectionSearch, Finder
from mechrefusal.directions.rdo import RDOSettings
from mechrefusal.directions.rdo_cone import rdo_cone
from mechrefusal.directions.rdo_finder import RDOFinder
from mechrefusal.directions.selection import CandidateScores, SelectionFilters

__all__ = [
    "CandidateScores",
    "FINDERS",
    "Direction",
    "DirectionSearch",
    "DirectionSet",
    "Finder",
    "DIMFinder",
    "DIMSettings",
    "RDOFinder",
    "RDOSettings",
    "SelectionFilters",
    "as_direction_set",
    "find_direction",
    "rdo_cone",
]
