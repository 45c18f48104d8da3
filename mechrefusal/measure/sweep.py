"""Refusal scores under many ablation configurations, several configurations per forward pass.

Each configuration ablates the span of a subset of a direction set. A forward pass stacks one copy of
a prompt batch per configuration and a hook projects each copy onto the orthogonal complement of its
own subset (``h <- h - Q_c Q_c^T h`` at every layer, site and position, as `Ablate` does), so C
configurations cost about C plain forward passes and no generation (``benchmarks/independence_sweep.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechrefusal.core.directions import DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.interventions import ablation_sites
from mechrefusal.measure.metrics import refusal_token_ids, score_from_logprobs
from mechrefusal.models import Model

Subset = tuple[int, ...]


def subset_bases(directions: DirectionSet, subsets: Sequence[Subset]) -> Float[Tensor, "config d_model k"]:
    """An orthonormal basis of each subset's span, zero-padded to ``len(directions)`` columns (the empty
    subset's basis is all zeros: nothing is ablated)."""
    bases = torch.zeros(len(subsets), directions.matrix.shape[1], len(directions))
    for c, subset in enumerate(subsets):
        if any(not 0 <= i < len(directions) for i in subset):
            raise SettingError(f"Subset {subset} names a direction outside 0..{len(directions) - 1}.")
        if subset:
            q = DirectionSet([directions[i] for i in subset]).basis()
            bases[c, :, : q.shape[1]] = q
    return bases


def ablation_scores(
    model: Model,
    prompts: Sequence[str],
    directions: DirectionSet,
    subsets: Sequence[Subset],
    *,
    batch_size: int = 16,
    stack: int = 8,
    progress: bool = False,
) -> Float[Tensor, "config prompt"]:
    """Refusal score of every prompt with each subset of ``directions`` ablated (``()``: nothing).

    Args:
        batch_size: prompts per batch.
        stack: configurations per forward pass (a pass holds ``batch_size * stack`` rows).
    """
    if not prompts or not subsets:
        raise SettingError("ablation_scores needs at least one prompt and one subset.")
    if stack < 1:
        raise SettingError(f"stack must be at least 1, got {stack}.")
    directions.check_width(model.d_model)
    bases = subset_bases(directions, subsets).to(model.device)
    tokens = refusal_token_ids(model)
    scores = torch.zeros(len(subsets), len(prompts))
    chunks = [range(start, min(start + stack, len(subsets))) for start in range(0, len(subsets), stack)]
    work = [(indices, batch, chunk) for indices, batch in model.batches(prompts, batch_size) for chunk in chunks]
    with torch.no_grad():
        for indices, batch, chunk in tqdm(work, desc="ablation sweep", disable=not progress, leave=False):
            q = bases[chunk.start : chunk.stop]

            def ablate(activation: Float[Tensor, "row seq d_model"], hook, q: Tensor = q) -> Tensor:
                grouped = activation.view(q.shape[0], -1, *activation.shape[1:])
                qc = q.to(activation.dtype)
                projected = torch.einsum("cbsk,cdk->cbsd", torch.einsum("cbsd,cdk->cbsk", grouped, qc), qc)
                return (grouped - projected).view_as(activation)

            hooks = [
                (site.format(layer=layer), ablate) for layer in range(model.n_layers) for site in ablation_sites(model)
            ]
            with model.bridge.hooks(fwd_hooks=hooks):
                logits = model.bridge(
                    batch.input_ids.repeat(len(chunk), 1),
                    attention_mask=batch.attention_mask.repeat(len(chunk), 1),
                    logits_to_keep=1,
                )
            logprobs = logits[:, -1].float().log_softmax(dim=-1).view(len(chunk), len(indices), -1).cpu()
            for c, row in zip(chunk, logprobs):
                scores[c, indices] = score_from_logprobs(row, tokens)
    return scores
