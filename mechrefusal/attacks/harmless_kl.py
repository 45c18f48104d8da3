"""The harmless KL of an attack's model edit: the mean first-token KL divergence of the plain model's
reply distribution from the edited model's, over the first n prompts of the bundled harmless test split.

Only a fixed edit (`intervention_kind` ``"model edit"``: the direction attacks' ablations) has one; the
campaign measures it once per distinct edit and keeps it in ``OUT/harmless_kl/<key>.json`` (the key: the
weights, the chat format, the edit's fingerprint and the prompts), so a resumed campaign, or another
behaviour under the same edit, reads it instead of computing it again.
"""

from __future__ import annotations

import json
from pathlib import Path

from mechrefusal import data
from mechrefusal.core.cache import atomic_write_bytes
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import Interventions
from mechrefusal.measure.metrics import first_token_kl
from mechrefusal.models import Model


def harmless_prompts(n: int) -> list[str]:
    """The first ``n`` prompts of the harmless test split (one sentence when ``n`` is out of range)."""
    prompts = data.load("harmless", "test")
    if not 1 <= n <= len(prompts):
        raise SettingError(f"The harmless KL needs 1 to {len(prompts)} harmless test prompts, got {n}.")
    return prompts[:n]


def harmless_kl(model: Model, edit: Interventions, prompts: list[str], path: Path) -> float:
    """Mean first-token KL(plain || ``edit``) over ``prompts``, read from ``path`` when it was computed before
    (a damaged file is recomputed)."""
    try:
        return float(json.loads(path.read_text())["kl"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not computed yet, or damaged
    kl = first_token_kl(model, prompts, edit).mean().item()
    atomic_write_bytes(path, json.dumps({"kl": kl, "prompts": len(prompts)}).encode("utf-8"))
    return kl
