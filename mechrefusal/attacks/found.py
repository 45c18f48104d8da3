"""What the direction attacks share: the model's saved directions, directions carried in a test case's
JSON ``info``, and the search cache (in memory and under ``$MECHREFUSAL_HOME/searches``) that keeps a
campaign from searching once per behaviour, and a resumed one from searching again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mechrefusal.attacks.campaign import fingerprint
from mechrefusal.core.cache import home
from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.core.provenance import weights_fingerprint
from mechrefusal.directions import SelectionFilters
from mechrefusal.interventions import Interventions
from mechrefusal.models import Model

_FOUND: dict[str, DirectionSet] = {}
"""Search key -> what a search found, for the life of the process."""


def saved_directions(model: Model, attack: str) -> DirectionSet:
    """The directions saved with ``model`` (a trainer checkpoint's), or a one-sentence error naming ``attack``."""
    if model.directions is None or not len(model.directions):
        raise SettingError(
            f"This model has no saved directions; the {attack} attack needs a trainer checkpoint "
            "(a directory with directions.safetensors)."
        )
    return model.directions


def attacker_filters(model: Model, max_kl: float | None) -> SelectionFilters:
    """The selection filters of an attacker's direction search: the loosest filters the model's saved
    directions were searched with (`SelectionFilters.loosest`; on the embedded model the trainer's looser
    filters find a stronger direction, docs/results.md), with ``max_kl`` instead of theirs where given."""
    return SelectionFilters.loosest(model.directions, max_kl=max_kl)


def to_info(directions: Sequence[Direction]) -> list[dict[str, Any]]:
    """The directions as JSON-ready dicts (layer, position, method, float32 vector as a list)."""
    return [
        {"layer": d.layer, "position": d.position, "method": d.method, "vector": d.vector.float().tolist()}
        for d in directions
    ]


def from_info(items: Sequence[dict[str, Any]]) -> list[Direction]:
    """The directions `to_info` wrote, bit for bit."""
    return [
        Direction(torch.tensor(item["vector"], dtype=torch.float32), item["layer"], item["position"], item["method"])
        for item in items
    ]


def search_key(model: Model, intervention: Interventions, settings: dict[str, Any]) -> str:
    """What a search's result depends on: the weights, the saved directions, the intervention and the
    attack's settings."""
    payload = {
        "weights": weights_fingerprint(model.hf_model),
        "saved": fingerprint(model.directions),
        "intervention": fingerprint(intervention),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cached(key: str, compute: Callable[[], DirectionSet]) -> DirectionSet:
    """``compute()``, once per ``key``: kept for the process and on disk, where a damaged file is searched
    again."""
    if key not in _FOUND:
        path = home() / "searches" / f"{key[:32]}.safetensors"
        try:
            _FOUND[key] = DirectionSet.load(path)
        except MechrefusalError:  # not searched yet, or damaged
            _FOUND[key] = compute()
            _FOUND[key].save(path)
    return _FOUND[key]
