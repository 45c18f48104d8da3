"""Scalar projections of prompts' residual streams on directions, and the per-layer DIM profile.

`projections` reads each direction at its own layer and post-instruction position; `layer_profile`
shows, for every layer, how long the difference-in-means vector is and how well it separates
held-out harmful from harmless prompts (Cohen's d of their projections on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.directions import Direction, DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.directions.dim import dim_candidates
from mechrefusal.models import Model
from mechrefusal.models.autocast import autocast


def projections(
    model: Model,
    prompts: Sequence[str],
    directions: DirectionSet | Sequence[Direction],
    *,
    batch_size: int = 16,
    dtype: str = "float32",
) -> Float[Tensor, "prompt k"]:
    """``x . d / |d|`` for every prompt and direction, with ``x`` the residual stream entering the
    direction's layer at its position (no intervention), the forward passes computed in ``dtype`` (`autocast`:
    auto, bfloat16 or float32) and the projections in float32."""
    if not prompts or not len(directions):
        raise SettingError("projections needs at least one prompt and one direction.")
    layers = sorted({direction.layer for direction in directions})
    read: dict[int, Tensor] = {}

    def store(layer: int):
        def hook(activation: Float[Tensor, "batch seq d_model"], hook) -> Tensor:
            read[layer] = activation
            return activation

        return hook

    out = torch.zeros(len(prompts), len(directions))
    hooks = [(f"blocks.{layer}.hook_in", store(layer)) for layer in layers]
    with torch.no_grad(), autocast(model, dtype), model.bridge.hooks(fwd_hooks=hooks):
        for indices, batch in model.batches(prompts, batch_size):
            model.bridge(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=layers[-1])
            for k, direction in enumerate(directions):
                x = read[direction.layer][:, direction.position].float()
                unit = direction.vector.float() / direction.vector.float().norm().clamp_min(1e-12)
                out[indices, k] = (x * unit.to(x.device)).sum(dim=-1).cpu()  # float32: autocast casts a matmul
    return out


@dataclass(repr=False)
class LayerProfile:
    """Per-layer DIM vectors at one position: their norms and the separation they give."""

    position: int
    norm: list[float]
    separation: list[float | None]
    """Cohen's d per layer; ``None`` where the DIM vector is zero (e.g. at the embedding, where the
    post-instruction tokens are the same for every prompt)."""

    def __repr__(self) -> str:
        scored = [(d, layer) for layer, d in enumerate(self.separation) if d is not None]
        peak = f", peak separation {max(scored)[0]:.3g} at layer {max(scored)[1]}" if scored else ""
        return f"LayerProfile(position={self.position}, layers={len(self.norm)}{peak})"

    def to_dict(self) -> dict:
        return {"position": self.position, "norm": self.norm, "separation": self.separation}


def cohens_d(a: Float[Tensor, " n"], b: Float[Tensor, " m"]) -> float:
    """(mean a - mean b) / pooled standard deviation."""
    pooled = (a.var(unbiased=True) * (len(a) - 1) + b.var(unbiased=True) * (len(b) - 1)) / (len(a) + len(b) - 2)
    return ((a.mean() - b.mean()) / pooled.sqrt().clamp_min(1e-12)).item()


def layer_profile(
    model: Model,
    harmful: Sequence[str],
    harmless: Sequence[str],
    harmful_test: Sequence[str],
    harmless_test: Sequence[str],
    *,
    position: int = -1,
    batch_size: int = 16,
    dtype: str = "float32",
    progress: bool = False,
) -> LayerProfile:
    """DIM vector of every layer at ``position`` from ``harmful``/``harmless`` (massive dimensions zeroed,
    as the finder does), its norm, and Cohen's d of the held-out prompts' projections on it (computed in
    ``dtype``, as `projections`)."""
    if len(harmful_test) < 2 or len(harmless_test) < 2:
        raise SettingError("layer_profile needs at least two held-out prompts per set for a standard deviation.")
    slot = model.post_instruction_positions.index(position)
    candidates, _ = dim_candidates(model, harmful, harmless, batch_size=batch_size, progress=progress)
    per_layer = DirectionSet(
        [Direction(candidates[layer, slot], layer, position, "dim") for layer in range(model.n_layers)]
    )
    bad = projections(model, harmful_test, per_layer, batch_size=batch_size, dtype=dtype)
    good = projections(model, harmless_test, per_layer, batch_size=batch_size, dtype=dtype)
    norms = candidates[:, slot].norm(dim=-1).tolist()
    return LayerProfile(
        position,
        norms,
        [cohens_d(bad[:, layer], good[:, layer]) if norms[layer] > 1e-6 else None for layer in range(model.n_layers)],
    )
