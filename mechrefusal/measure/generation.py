"""Batched generation, interventions active at every step (KV cache on). Transformers' own decoding loop runs
the bridged model (its modules are the bridge's components, so every hook fires): greedy replies equal those
of the bridge's own `generate` loop token for token, in 0.76x its time on the embedded model
(`benchmarks/generation_loop.py`, docs/results.md session 16). The prompts' shared first tokens are prefilled
once per batch (`_prefill_shared_prefix`; docs/design.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import DynamicCache, GenerationConfig

from mechrefusal.core.sequences import common_prefix_length
from mechrefusal.interventions import Interventions, uniform
from mechrefusal.models import Batch, Model
from mechrefusal.models.autocast import hooked_beyond_autocast

GENERATION_BATCH_SIZE = 64
"""Prompts per generation batch by default: one decoding step costs little more for 64 rows than for 16
(prompts are grouped by length, so padding stays small); 128 harmless prompts x 32 tokens took 17.3 s at 64
against 26.3 s at 16 on 2 idle Xeon threads in bf16 (`benchmarks/generation_batch.py`, docs/results.md)."""


class ComputeDtypeCache(DynamicCache):
    """Transformers' dynamic KV cache, holding keys and values in autocast's dtype where autocast is on. RoPE's
    float32 cos and sin leave the keys in float32, so the cache would grow, and expand per query group, float32
    keys that every attention matmul then casts to bf16: the same numbers, at half the bytes and without the
    cast (0.85-0.91x a generation of the embedded model, `benchmarks/kv_cache_dtype.py`)."""

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs):
        device = key_states.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            key_states, value_states = key_states.to(dtype), value_states.to(dtype)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


def generate(
    model: Model,
    instructions: Sequence[str],
    *,
    max_new_tokens: int = 64,
    intervention: Interventions = None,
    batch_size: int = GENERATION_BATCH_SIZE,
    do_sample: bool = False,
    temperature: float = 1.0,
    progress: bool = False,
    rendered: bool = False,
) -> list[str]:
    """Replies to chat instructions, greedy by default, in the order given.

    Generation stops at an end token (`stop_ids`); the reply text excludes it.
    ``rendered=True`` takes prompts already rendered with the chat template (whole conversations).
    """
    replies = generate_ids(
        model,
        instructions,
        max_new_tokens=max_new_tokens,
        intervention=intervention,
        batch_size=batch_size,
        do_sample=do_sample,
        temperature=temperature,
        progress=progress,
        rendered=rendered,
    )
    return [str(model.tokenizer.decode(reply, skip_special_tokens=True)) for reply in replies]


def generate_ids(
    model: Model,
    instructions: Sequence[str],
    *,
    max_new_tokens: int = 64,
    intervention: Interventions = None,
    batch_size: int = GENERATION_BATCH_SIZE,
    do_sample: bool = False,
    temperature: float = 1.0,
    progress: bool = False,
    rendered: bool = False,
) -> list[list[int]]:
    """The reply token ids of :func:`generate` (up to, not including, the first end token, `stop_ids`)."""
    stops = stop_ids(model)
    eos = model.tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=0 if do_sample else None,  # plain sampling from the tempered distribution, as the bridge samples
        top_p=1.0 if do_sample else None,
        eos_token_id=stops,
        pad_token_id=eos,
        # transformers fills every unset field from the model's own generation_config (Qwen2.5's sets a
        # repetition penalty of 1.05-1.1): greedy here means the plain argmax, whatever the model suggests
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    )
    replies: list[list[int] | None] = [None] * len(instructions)
    batches = list(model.batches(instructions, batch_size, rendered=rendered))
    # hooks from outside (an attack's own) may act per row or position, where a shared prefix would be wrong;
    # autocast's NaN guards act elementwise on the attention pattern and are no such hook
    share = uniform(intervention) and not hooked_beyond_autocast(model) and _full_attention(model)
    with torch.no_grad(), model.intervene(intervention):
        for indices, batch in tqdm(batches, desc="generate", disable=not progress, leave=False):
            cache = ComputeDtypeCache(config=model.hf_model.config)
            input_ids, attention_mask = batch.input_ids, batch.attention_mask
            if share:
                input_ids, attention_mask = _prefill_shared_prefix(model, batch, cache)
            tokens = model.hf_model.generate(  # type: ignore[operator]  # mypy sees nn.Module's __getattr__
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, past_key_values=cache
            )
            for index, row in zip(indices, cast(Tensor, tokens)[:, input_ids.shape[1] :].tolist()):
                replies[index] = row[: min((row.index(i) for i in stops if i in row), default=len(row))]
    return cast(list[list[int]], replies)  # every row was filled


def _full_attention(model: Model) -> bool:
    """Whether every attention layer sees the whole cache: padding moved between the shared prefix and the rest
    of a prompt would shift what a sliding window (Gemma-2's) or an attention chunk holds, so only layers
    known to be full attention share it."""
    config = model.hf_model.config
    types = getattr(config, "layer_types", None)
    if types:
        return set(types) == {"full_attention"}
    return all(getattr(config, key, None) is None for key in ("sliding_window", "attention_chunk_size"))


def _prefill_shared_prefix(
    model: Model, batch: Batch, cache: DynamicCache
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Run the first tokens every prompt of a left-padded batch has in common (the chat template's system turn)
    once into ``cache``, for every row, and return the batch with its padding moved after them (positions
    follow the attention mask, so each prompt keeps its own). Prefilling is a third to a half of a generation's
    time, and the shared tokens half of a prompt on the embedded model."""
    rows, width = batch.input_ids.shape
    real = batch.attention_mask.sum(dim=1).tolist()
    prompts = [row[width - n :] for row, n in zip(batch.input_ids.tolist(), real)]
    length = min(common_prefix_length(prompts), min(real) - 1)  # a token of each prompt is left for `generate`
    if rows == 1 or not length:
        return batch.input_ids, batch.attention_mask
    first = batch.input_ids[:1, width - real[0] :][:, :length]
    model.hf_model(input_ids=first, past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(rows)
    input_ids, attention_mask = batch.input_ids.clone(), torch.zeros_like(batch.attention_mask)
    for i, n in enumerate(real):
        input_ids[i, :length] = batch.input_ids[i, width - n : width - n + length]
        input_ids[i, length : width - n + length] = batch.input_ids[i, : width - n]  # the padding
        attention_mask[i, :length] = attention_mask[i, width - n + length :] = 1
    return input_ids, attention_mask


def stop_ids(model: Model) -> list[int]:
    """The tokens that end a reply: the tokenizer's end of sequence, then those of the model's own generation
    config (Gemma-2 ends its turns with ``<end_of_turn>``, not ``<eos>``; without it a reply runs on into
    text the chat template never showed the model)."""
    configured = model.hf_model.generation_config.eos_token_id
    listed = configured if isinstance(configured, list) else [] if configured is None else [configured]
    return list(dict.fromkeys([model.tokenizer.eos_token_id, *listed]))
