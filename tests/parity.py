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
        logits, cache = model.bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                                    names_filter=lambda name: name in names)
    residuals = torch.stack([cache[name][:, positions] for name in names], dim=1)
    return logits[:, -1], residuals


def assert_batch_parity(model: Model, instructions: list[str], atol: float = 1e-4) -> None:
    batched_logits, batched_residuals = last_logits_and_residuals(model, instructions)
    for i, instruction in enumerate(instructions):
        logits, residuals = last_logits_and_residuals(model, [instruction])
        torch.testing.assert_close(batched_logits[i], logits[0], atol=atol, rtol=0)
        torch.testing.assert_close(batched_residuals[i], residuals[0], atol=atol, rtol=1e-5)
