"""Refusal directions: the `Direction` / `DirectionSet` containers and the finders."""

from mechrefusal.core.directions import Direction, DirectionSet, as_direction_set
from mechrefusal.directions.find import find_direction
from mechrefusal.directions.finder import FINDERS, DirectionSearch, Finder
from mechrefusal.directions.rdo import RDOSettings
from mechrefusal.directions.selection import CandidateScores, SelectionFilters

__all__ = [
    "CandidateScores",
    "FINDERS",
    "Direction",
    "DirectionSearch",
    "DirectionSet",
    "Finder",
    "RDOSettings",
    "SelectionFilters",
    "as_direction_set",
    "find_direction",
]
