"""`LabelledReply`: human-labelled (objective, response) pairs published in pyrit 1.1.0, for validating judges.

Two kinds, read at run time from the pinned wheel's ``scorer_evals`` CSV files (never pasted in):

* ``objective``: did the response achieve the objective (carry out the harmful behaviour)? ``label`` is
  pyrit's ``human_score`` (0 or 1 in 1.1.0; a fractional score counts as achieved at 0.5 or above).
* ``refusal``: is the response a refusal? ``label`` is the ``human_score`` (1 = refusal). The file
  ``sample/mini_refusal.csv`` repeats 24 rows of ``refusal.csv`` and is left out.

Rows are de-duplicated on (objective, response). ``split`` puts every row of one objective on the same side
(``train`` or ``test``, 70/30 by a hash of the normalised objective), so a judge validated on ``test`` has
never seen those objectives, in either kind.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from functools import cache

from mechrefusal.core.assets import PYRIT, read_member
from mechrefusal.core.errors import DataError
from mechrefusal.data.splits import normalise

KINDS = ("objective", "refusal")
LABEL_SPLITS = ("train", "test")

_ROOT = "pyrit/datasets/scorer_evals"
FILES = {
    "objective": tuple(
        f"{_ROOT}/objective/{name}.csv"
        for name in (
            "bias",
            "chemical_biological",
            "cyber",
            "exploits",
            "harassment_bullying",
            "hate_speech",
            "illegal_activity",
            "info_integrity",
            "misinformation",
            "phishing",
            "privacy",
            "self_harm",
            "sexual",
            "violence",
        )
    ),
    "refusal": (f"{_ROOT}/refusal_scorer/refusal.csv", f"{_ROOT}/refusal_scorer/refusal_extra.csv"),
}
"""The wheel members read for each kind."""


@dataclass(frozen=True)
class LabelledReply:
    """One human-labelled response: ``label`` is True for achieved/harmful (objective) or refused (refusal)."""

    objective: str
    response: str
    label: bool
    category: str
    source: str


def split_of_objective(objective: str) -> str:
    """``train`` or ``test`` for an objective (30% test), from a hash of its normalised text."""
    bucket = int(hashlib.sha256(f"labels:{normalise(objective)}".encode()).hexdigest(), 16) % 10
    return "test" if bucket >= 7 else "train"


def labelled(kind: str, split: str | None = None) -> list[LabelledReply]:
    """The de-duplicated labelled rows of one kind (``objective`` or ``refusal``), optionally one split."""
    if kind not in KINDS:
        raise DataError(f"Unknown kind of labelled replies {kind!r}; choose one of {', '.join(KINDS)}.")
    if split is not None and split not in LABEL_SPLITS:
        raise DataError(f"Unknown split {split!r} of labelled replies; choose one of {', '.join(LABEL_SPLITS)}.")
    return [row for row in _rows(kind) if split is None or split_of_objective(row.objective) == split]


def read_file(member: str) -> list[LabelledReply]:
    """The rows of one pyrit ``scorer_evals`` CSV member (leading ``#`` comment lines skipped)."""
    lines = read_member(PYRIT, member).decode("utf-8-sig").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    kind = member.split("/")[-2]
    rows = []
    for raw in csv.DictReader(io.StringIO("".join(lines[start:]))):
        try:
            score = float(raw["human_score"])
            objective, response = raw["objective"], raw["assistant_response"]
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{member} has a row without objective, assistant_response or numeric human_score."
            ) from None
        if not 0.0 <= score <= 1.0:
            raise DataError(f"{member} has a human_score of {score}, outside the expected 0..1 scale.")
        category = raw.get("harm_category") or ("refusal" if kind == "refusal_scorer" else "")
        rows.append(LabelledReply(objective.strip(), response.strip(), score >= 0.5, category, member.split("/")[-1]))
    return rows


def data_hash() -> str:
    """A short hash of every labelled row (a cache key for judges trained or measured on them)."""
    digest = hashlib.sha256()
    for kind in KINDS:
        for row in _rows(kind):
            digest.update(f"{kind}\0{row.objective}\0{row.response}\0{int(row.label)}\0".encode())
    return digest.hexdigest()[:16]


@cache
def _rows(kind: str) -> tuple[LabelledReply, ...]:
    seen: set[tuple[str, str]] = set()
    rows = []
    for member in FILES[kind]:
        for row in read_file(member):
            if (row.objective, row.response) not in seen:
                seen.add((row.objective, row.response))
                rows.append(row)
    return tuple(rows)
