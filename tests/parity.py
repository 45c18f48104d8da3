"""Helpers for batched-versus-single parity checks."""

from __future__ import annotations

import torch

from mechrefusal import Model


def last_logits_and_residuals(model: Model, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-token logits and the residual stream entering every block at the post-instruction positions."""
    batch = model.tokenize(instructions)
    names = [f"blocks.{layer}.hook_in" for layer in range(model.n_layers)]
    positions = model.post_instruction_positions
    with torch.no_grad():
        logits, cache = model.bridge.run_with_cache(
            batch.input_ids, attention_mask=batch.attention_mask, names_filter=lambda name: name in names
        )
    residuals = torch.stack([cache[name][:, positions] for name in names], dim=1)
    return logits[:, -1], residuals


def assert_batch_parity(model: Model, instructions: list[str], atol: float = 1e-4, rms_tol: float = 1e-5) -> None:
    """Each prompt's last logits and residuals in a padded batch equal those of the prompt alone.

    fp32 matmuls of another batch shape round differently, and the rounding grows with the residual
    stream's scale (RMS ~20, entries ~400 in SmolLM2's late layers), so a residual entry may differ by
    ``atol + rms_tol * RMS`` of its layer and position plus ``rms_tol`` of its own size; a padding or mask
    error shifts it by O(1).
    """
    batched_logits, batched_residuals = last_logits_and_residuals(model, instructions)
    for i, instruction in enumerate(instructions):
        logits, residuals = last_logits_and_residuals(model, [instruction])
        torch.testing.assert_close(batched_logits[i], logits[0], atol=atol, rtol=0)
        allowed = atol + rms_tol * (residuals[0].pow(2).mean(dim=-1, keepdim=True).sqrt() + residuals[0].abs())
        excess = (batched_residuals[i] - residuals[0]).abs() - allowed
        worst = excess.flatten().argmax()
        assert excess.max() <= 0, (
            f"prompt {i}: residual differs by {excess.max() + allowed.flatten()[worst]:.3g} "
            f"at (layer, position, dim) {tuple(torch.unravel_index(worst, excess.shape))}, "
            f"allowed {allowed.flatten()[worst]:.3g}"
        )
