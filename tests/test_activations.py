"""Streaming means equal the means of fully cached activations, and stop where they should."""

from __future__ import annotations

import pytest
import torch

from mechrefusal import mean_activations

PROMPTS = [
    "Hi",
    "Explain photosynthesis to a child",
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling",
    "List three prime numbers",
    "How do magnets work?",
    "Translate 'good morning' into Spanish",
]


def cached_means(model, prompts):
    names = [f"blocks.{layer}.hook_in" for layer in range(model.n_layers)]
    rows = []
    for prompt in prompts:  # one at a time: no padding involved in the reference
        batch = model.tokenize([prompt])
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(
                batch.input_ids, attention_mask=batch.attention_mask, names_filter=lambda name: name in names
            )
        rows.append(torch.stack([cache[name][0, model.post_instruction_positions] for name in names]))
    return torch.stack(rows).double().mean(dim=0)


def test_streaming_means_equal_cached_means(tiny_model):
    result = mean_activations(tiny_model, PROMPTS, batch_size=3, progress=False)
    assert result.mean.dtype == torch.float64
    assert result.mean.shape == (tiny_model.n_layers, len(tiny_model.post_instruction_positions), tiny_model.d_model)
    assert result.n_prompts == len(PROMPTS)
    torch.testing.assert_close(result.mean, cached_means(tiny_model, PROMPTS), atol=1e-5, rtol=1e-5)


def test_batch_size_does_not_change_the_means(tiny_model):
    one = mean_activations(tiny_model, PROMPTS, batch_size=1, progress=False).mean
    all_at_once = mean_activations(tiny_model, PROMPTS, batch_size=len(PROMPTS), progress=False).mean
    torch.testing.assert_close(one, all_at_once, atol=1e-5, rtol=1e-5)


def test_layer_and_position_subsets(tiny_model):
    full = mean_activations(tiny_model, PROMPTS, progress=False)
    part = mean_activations(tiny_model, PROMPTS, layers=[1], positions=[-1], progress=False)
    assert part.layers == [1] and part.positions == [-1]
    torch.testing.assert_close(part.mean[0, 0], full.mean[1, -1])


def test_forward_pass_stops_after_the_last_layer_read(tiny_model):
    calls = []
    with tiny_model.bridge.hooks(fwd_hooks=[("blocks.1.hook_in", lambda x, hook: calls.append(hook.name))]):
        mean_activations(tiny_model, PROMPTS, layers=[0], progress=False)
    assert calls == []


def test_bad_arguments_are_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="layers must lie in 0..1"):
        mean_activations(tiny_model, PROMPTS, layers=[5], progress=False)
    with pytest.raises(ValueError, match="must be negative"):
        mean_activations(tiny_model, PROMPTS, positions=[0], progress=False)
    with pytest.raises(ValueError, match="instructions must be a non-empty list of instructions"):
        mean_activations(tiny_model, [], progress=False)
