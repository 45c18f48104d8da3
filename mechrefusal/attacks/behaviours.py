"""The behaviours a campaign attacks: a named instruction set or a user's file, each with its target."""

from __future__ import annotations

from pathlib import Path

from mechrefusal import data
from mechrefusal.attacks.base import Behaviour
from mechrefusal.attacks.targets import target_for
from mechrefusal.core.errors import DataError, SettingError


def load_behaviours(source: str, n: int | None = None, *, split: str | None = "test") -> list[Behaviour]:
    """The first ``n`` behaviours (all when ``None``) of a named set (``harmbench``, ``advbench``,
    ``harmful``; one ``split`` of it, default the held-out ``test``) or of a ``.jsonl``/``.csv``/``.txt``
    file (all of it), with rule-made targets (`target_for`)."""
    if n is not None and n < 1:
        raise SettingError(f"The number of behaviours must be at least 1, got {n}.")
    if source in data.NAMES:
        texts = data.load(source, split)
    elif Path(source).suffix in (".jsonl", ".csv", ".txt"):
        texts = data.load_file(source)
    else:
        raise SettingError(
            f"Unknown behaviours {source!r}; name a set ({', '.join(data.NAMES)}) or a .jsonl, .csv or .txt file."
        )
    texts = [" ".join(text.split()) for text in texts[:n]]
    if not texts or not all(texts):
        raise DataError(f"The behaviours {source!r} hold no non-empty instruction; give at least one.")
    behaviours = [Behaviour(text, target_for(text)) for text in texts]
    if len({b.id for b in behaviours}) != len(behaviours):
        raise DataError(f"The behaviours {source!r} repeat an instruction; each behaviour must be distinct.")
    return behaviours
