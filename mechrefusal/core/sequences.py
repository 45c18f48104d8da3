"""The leading items several token sequences share: a chat template's common start (run once for a batch),
its common end (the post-instruction tokens), the part of a prompt an attack left as it was."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading items every one of ``sequences`` has in common (0 for none)."""
    length = 0
    for items in zip(*sequences):
        if any(item != items[0] for item in items):
            break
        length += 1
    return length
