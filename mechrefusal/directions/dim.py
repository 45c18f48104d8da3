"""Difference-in-means (DIM) candidate directions at every layer and post-instruction position.

Massive activations: from the middle layers on, some models (SmolLM2 among them) park a huge value in
one or two residual dimensions of the first token, the attention sink (about 25,000 in dimension 507
for SmolLM2-135M, against a few hundred for ordinary tokens). A direction with even a small component
there moves the sink by hundreds when ablated at every position, and the model prints gibberish. DIM
candidates therefore have those dimensions zeroed by default (recorded in their provenance); ablation
of such a direction leaves the sink's massive dimension alone, and weight orthogonalisation stays
exactly equivalent to hook ablation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.measure.activations import mean_activations
from mechrefusal.models import Model

_PROBE = "Give me three tips for keeping a houseplant alive."


def massive_dims(model: Model, ratio: float = 100.0) -> list[int]:
    """Residual dimensions where the first token's activation exceeds ``ratio`` x its median magnitude
    at some layer (the attention sink's massive activations)."""
    batch = model.tokenize([_PROBE])
    names = [f"blocks.{layer}.hook_in" for layer in range(model.n_layers)]
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(
            batch.input_ids, attention_mask=batch.attention_mask, names_filter=lambda name: name in names
        )
    found: set[int] = set()
    for name in names:
        sink = cache[name][0, 0].abs().float()
        found.update((sink > ratio * sink.median().clamp_min(1e-6)).nonzero().flatten().tolist())
    return sorted(found)


def dim_candidates(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    exclude_massive: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[Float[Tensor, "layer pos d_model"], list[int]]:
    """Mean harmful minus mean harmless residual stream at every layer and post-instruction position.

    Returns the candidates (float32) and the massive dimensions that were zeroed in them.
    """
    harmful_means = mean_activations(model, harmful, batch_size=batch_size, progress=progress).mean
    harmless_means = mean_activations(model, harmless, batch_size=batch_size, progress=progress).mean
    candidates = (harmful_means - harmless_means).float()
    zeroed = massive_dims(model) if exclude_massive else []
    candidates[..., zeroed] = 0.0
    return candidates, zeroed
