"""Training batches' shared prompt prefix, run once per distinct intervention instead of once per row.

Every prompt of a chat model begins with the same tokens (SmolLM2's system turn and the start of the user
turn: 24 of the 60-70 tokens of a training row), and their activations are the same in every row under the
same interventions. `grouped_reply_logits` runs that prefix once for each distinct intervention among the
groups of a step's batches (its harmful and its harmless examples), keeps its keys and values, with their
gradient, as the KV cache of every row under that intervention, and runs only the rest of each row: the
same logits and gradients as whole rows, in less time (`benchmarks/shared_prefix.py`).

Sharing needs activations that do not depend on the row beyond its intervention: `uniform` interventions
(`Ablate`, `Add`) and no dropout. Anything else (`RandomAblate`, dropout in training mode) runs whole rows
as before, and so do the trainer's latent adversary (its perturbation is per position), activation
checkpointing and torchrun (`train_round`'s ``share_prefix``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Hashable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.sequences import common_prefix_length
from mechrefusal.interventions import Interventions, per_row, uniform
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.hooks import flatten

Groups = Sequence[tuple[Sequence[int], Interventions]]
"""A micro-batch split into example indices, each group trained under one intervention (or none); a batch
of the groups holds their rows in group order."""


def grouped_reply_logits(
    model: Model, runs: Sequence[tuple[ReplyBatch, Groups]], forward: Callable | None = None, *, share: bool = True
) -> list[Float[Tensor, "batch window vocab"]]:
    """`Model.reply_logits` of each batch, whose rows are its groups' rows in order, each group under its
    own interventions; with ``share``, the prompt prefix all rows have in common runs once per distinct
    intervention (`shared_prefix_length`)."""
    length = shared_prefix_length(model, runs) if share else 0
    if not length:
        logits = []
        for batch, groups in runs:
            with model.intervene(per_row(groups)):
                logits.append(model.reply_logits(batch, forward))
        return logits
    run = forward or model.bridge
    distinct: dict[Hashable, Interventions] = {}  # one prefix row per distinct intervention, in first-seen order
    for _, groups in runs:
        for _, interventions in groups:
            distinct.setdefault(_identity(interventions), interventions)
    row_of = {key: k for k, key in enumerate(distinct)}
    prefix = runs[0][0].input_ids[:1, :length].expand(len(distinct), length)
    with model.intervene(per_row([([k], interventions) for k, interventions in enumerate(distinct.values())])):
        _, prefix_cache = run(
            prefix,
            attention_mask=torch.ones_like(prefix),
            use_cache=True,
            return_type="logits_and_cache",
            logits_to_keep=torch.zeros(0, dtype=torch.long, device=prefix.device),
        )
    logits = []
    for batch, groups in runs:
        rows: list[int] = []  # each row's prefix row, its group's intervention looked up once
        for indices, interventions in groups:
            rows += [row_of[_identity(interventions)]] * len(indices)
        window = batch.predictions
        with model.intervene(per_row(groups)):
            logits.append(
                run(
                    batch.input_ids[:, length:],
                    attention_mask=batch.attention_mask,
                    past_key_values=_rows_of(prefix_cache, torch.tensor(rows, device=prefix.device)),
                    logits_to_keep=torch.arange(window.start - length, window.stop - length, device=prefix.device),
                )
            )
    return logits


def shared_prefix_length(model: Model, runs: Sequence[tuple[ReplyBatch, Groups]]) -> int:
    """How many leading tokens every row of every batch shares and can run once per distinct intervention:
    0 when sharing saves nothing (no more rows than distinct interventions) or would change the result (an
    intervention that is not `uniform`, dropout)."""
    groups = [interventions for _, batch_groups in runs for _, interventions in batch_groups]
    if not uniform(*groups) or _dropout(model):
        return 0
    if sum(batch.input_ids.shape[0] for batch, _ in runs) <= len({_identity(item) for item in groups}):
        return 0
    limit = min(batch.predictions.start for batch, _ in runs)  # the first logit a loss reads comes after it
    return common_prefix_length([row for batch, _ in runs for row in batch.input_ids[:, :limit].tolist()])


def _identity(interventions: Interventions) -> Hashable:
    """Interventions of the same classes over the same objects (the same directions) act alike: a key
    that says so without comparing tensors."""
    return tuple(
        (type(item), *(id(getattr(item, field.name)) for field in dataclasses.fields(item)))  # type: ignore[arg-type]
        for item in flatten(interventions)
    )


def _rows_of(cache, rows: Tensor):
    """A copy of a Hugging Face KV cache holding the rows ``rows`` of its keys and values (gradient kept);
    the copy is extended by the next forward pass, the original stays as it is."""
    chosen = copy.copy(cache)
    chosen.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        chosen.layers.append(layer)
    return chosen


def _dropout(model: Model) -> bool:
    """Whether a forward pass of ``model`` drops activations at random (training mode and a dropout > 0)."""
    return model.hf_model.training and any(_drops(module) for module in model.hf_model.modules())


def _drops(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.Dropout):
        return module.p > 0
    rate = getattr(module, "attention_dropout", 0.0)  # the attention's own rate (Llama-style modules)
    return isinstance(rate, float | int) and rate > 0
