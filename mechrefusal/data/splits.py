"""Deterministic train/val/test splits keyed by a hash of each prompt's normalised text.

A prompt's split depends on its text alone: it never moves when a set grows, and two copies of one
prompt (up to case, spacing and trailing punctuation) always land in the same split.
"""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "val", "test")
# Shares in tenths: 6 train, 2 val, 2 test.
_BOUNDS = {"train": range(0, 6), "val": range(6, 8), "test": range(8, 10)}


def normalise(text: str) -> str:
    """Lower-case, single-spaced, without trailing punctuation: the identity used for de-duplication."""
    return re.sub(r"\s+", " ", text).strip().lower().rstrip(".?!;: ")


def split_of(text: str) -> str:
    """The split a prompt belongs to."""
    bucket = int(hashlib.sha256(normalise(text).encode()).hexdigest(), 16) % 10
    return next(name for name, bucket_range in _BOUNDS.items() if bucket in bucket_range)
