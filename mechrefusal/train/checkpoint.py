"""Checkpoints: one directory per round, written atomically.

``out/round-K/`` holds the Hugging Face ``save_pretrained`` layout (safetensors) with the tokenizer,
``directions.safetensors`` (every direction found so far, with provenance) and ``mechrefusal.json``
(method, round, configuration, metrics, versions, wall time), and ``settings.toml``, which replays the
run (``python -m mechrefusal.train --config out/round-K/settings.toml``). A round directory appears only once all
of it is written, so a run killed at any moment leaves only complete rounds behind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mechrefusal.core.cache import atomic_directory
from mechrefusal.core.checkpoint_record import METADATA
from mechrefusal.core.cli import SETTINGS_FILE, write_settings
from mechrefusal.core.directions import SAVED_FILE, DirectionSet
from mechrefusal.models import Model
from mechrefusal.models.export import save_hf_directory


def round_directory(out: str | Path, round_index: int) -> Path:
    return Path(out) / f"round-{round_index}"


def save_checkpoint(model: Model, directions: DirectionSet, out: str | Path, round_index: int, metadata: dict) -> Path:
    """Write round ``round_index`` atomically and return its directory (with ``settings.toml``, which
    replays the run, when ``metadata`` holds its ``"settings"``)."""
    target = round_directory(out, round_index)
    with atomic_directory(target) as scratch:
        save_hf_directory(model, scratch)
        directions.save(scratch / SAVED_FILE)
        (scratch / METADATA).write_text(json.dumps({**metadata, "round": round_index}, indent=2))
        if "settings" in metadata:
            write_settings(metadata["settings"], scratch / SETTINGS_FILE)
    return target


def complete_rounds(out: str | Path) -> list[int]:
    """Indices of the complete round directories in ``out``, ascending."""
    rounds = []
    for path in Path(out).glob("round-*"):
        match = re.fullmatch(r"round-(\d+)", path.name)
        if match and (path / METADATA).exists():
            rounds.append(int(match.group(1)))
    return sorted(rounds)
