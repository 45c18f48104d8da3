"""A trainer checkpoint's record (``mechrefusal.json`` beside its weights: method, round, settings, metrics,
versions), readable from every layer: the measurements that must not score a model on what it was trained
on read it as well as the trainer that writes it."""

from __future__ import annotations

import json
from pathlib import Path

METADATA = "mechrefusal.json"


def read_metadata(directory: str | Path) -> dict:
    """The record of the trainer checkpoint in ``directory``."""
    return json.loads((Path(directory) / METADATA).read_text())


def training_settings(directory: str | Path) -> dict | None:
    """The trainer settings recorded with the checkpoint in ``directory``; None for a model that is no trainer
    checkpoint (no readable record with settings)."""
    try:
        settings = read_metadata(directory)["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return settings if isinstance(settings, dict) else None


def public_training_set(directory: str | Path) -> str:
    """The public harmful set the checkpoint in ``directory`` was trained on ('' for none, or for a model that
    is no trainer checkpoint)."""
    settings = training_settings(directory)
    return str(settings.get("public_harmful", "")) if settings else ""
