"""Streaming mean activations of the residual stream at the post-instruction positions.

Per-layer sums are accumulated in float64 by forward hooks while the batches stream through; no
activation is kept, so memory does not grow with the number of prompts, and the forward pass stops
after the last layer that is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float64
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.core.errors import SettingError
from mechrefusal.core.reprs import span
from mechrefusal.models import Model, check_instructions


@dataclass(repr=False)
class MeanActivations:
    """Mean residual stream entering each block (``blocks.{l}.hook_in``) at each read position."""

    mean: Float64[Tensor, "layer pos d_model"]
    layers: list[int]
    positions: list[int]
    n_prompts: int

    def __repr__(self) -> str:
        return (
            f"MeanActivations(n_prompts={self.n_prompts}, layers={span(self.layers)}, "
            f"positions={span(self.positions)}, shape={tuple(self.mean.shape)})"
        )


def mean_activations(
    model: Model,
    instructions: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> MeanActivations:
    """Mean of the residual stream over ``instructions`` at every layer and post-instruction position.

    Args:
        layers: block indices to read (default: all); the pass stops after the last of them.
        positions: negative positions from the end of the prompt (default: the post-instruction ones).
        batch_size: prompts per forward pass.
    """
    layers = sorted(set(range(model.n_layers) if layers is None else layers))
    positions = list(model.post_instruction_positions if positions is None else positions)
    check_instructions(instructions)
    if not layers or layers[0] < 0 or layers[-1] >= model.n_layers:
        raise SettingError(f"layers must lie in 0..{model.n_layers - 1}, got {layers}.")
    if not positions or any(p >= 0 for p in positions):
        raise SettingError(f"positions are counted from the end and must be negative, got {positions}.")

    sums = torch.zeros(len(layers), len(positions), model.d_model, dtype=torch.float64, device=model.device)
    index = torch.tensor(positions, device=model.device)

    def accumulate(slot: int):
        def hook(activation: Tensor, hook) -> Tensor:
            sums[slot] += activation[:, index].sum(dim=0, dtype=torch.float64)
            return activation

        return hook

    hooks = [(f"blocks.{layer}.hook_in", accumulate(slot)) for slot, layer in enumerate(layers)]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        for _, batch in tqdm(
            list(model.batches(instructions, batch_size)), desc="mean activations", disable=not progress, leave=False
        ):
            model.bridge(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=layers[-1])
    return MeanActivations(sums / len(instructions), layers, positions, len(instructions))
