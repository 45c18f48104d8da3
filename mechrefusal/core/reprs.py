"""Helpers for one-line ``__repr__``s of results: counts, shapes and headline numbers, never whole tensors."""

from __future__ import annotations

from collections.abc import Sequence


def short_list(items: Sequence, limit: int = 6) -> str:
    """``"a, b, c"``, or the first ``limit`` items and how many more: ``"a, b, …(+4)"``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown if len(items) <= limit else f"{shown}, …(+{len(items) - limit})"


def span(values: Sequence[int]) -> str:
    """A list of ints as ``"first..last"`` when it is a contiguous run, else as a short list."""
    values = list(values)
    contiguous = len(values) > 2 and values == list(range(values[0], values[-1] + 1))
    return f"{values[0]}..{values[-1]}" if contiguous else f"[{short_list(values)}]"
