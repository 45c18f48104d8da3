"""Versions of everything a number depends on, recorded next to every result."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from importlib import metadata


def versions() -> dict[str, str]:
    """Python, mechrefusal and the numeric libraries' versions."""
    found = {"python": platform.python_version()}
    for package in ("mechrefusal", "torch", "transformers", "transformer_lens"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def prompts_sha256(prompts: Sequence[str]) -> str:
    """A hash identifying an ordered list of prompts (the data behind a direction)."""
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()
