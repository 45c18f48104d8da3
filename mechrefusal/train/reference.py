"""`ReferenceLogits`: the original model's reply logits, computed once per harmless example and kept for the
whole training job.

The utility loss is the KL from the fixed original model on harmless examples, and every round (and every
evaluation) draws the same examples again: after the first round the reference's forward pass, about a
fifth of a training step, becomes a lookup. Kept logits are the ones a fresh forward pass would give, up to
float rounding (an example's rows do not depend on what else is in its batch, right padding leaves its
positions where they are). Entries are kept in CPU memory until they fill ``budget_bytes``; later examples
are computed each time they are drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.measure.losses import reply_targets
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.autocast import autocast
from mechrefusal.train.targets import Example

MAX_BUDGET_BYTES = 8 * 2**30
"""At most this much is kept: about 1,300 examples of 32 reply tokens over a 49k-token vocabulary in float32
(the embedded model's quick job keeps about 460, 2.6 GiB)."""


def default_budget_bytes() -> int:
    """A quarter of the machine's memory, at most `MAX_BUDGET_BYTES` (nothing kept where it cannot be read)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0
    return min(memory // 4, MAX_BUDGET_BYTES)


def reference_logits(reference: Model | ReferenceLogits) -> ReferenceLogits:
    """``reference`` itself when it keeps logits already, else a new `ReferenceLogits` of that model."""
    return reference if isinstance(reference, ReferenceLogits) else ReferenceLogits(reference)


class ReferenceLogits:
    """The reference model's logits at each example's reply positions, kept per example."""

    def __init__(self, reference: Model, budget_bytes: int | None = None) -> None:
        self.model = reference
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else budget_bytes
        self.kept_bytes = 0
        self._kept: dict[tuple[str, str, str], Tensor] = {}

    def __repr__(self) -> str:
        return f"ReferenceLogits(examples={len(self._kept)}, kept_bytes={self.kept_bytes}, budget={self.budget_bytes})"

    def __call__(
        self, examples: Sequence[Example], batch: ReplyBatch, dtype: str
    ) -> Float[Tensor, "batch window vocab"]:
        """The reference's logits at ``batch.predictions`` for ``examples``, ``batch``'s rows in order (zero
        where a row has no reply token; the reply losses never read those), computing in ``dtype`` only the
        examples not kept yet."""
        keys = [(e.instruction, e.reply, e.prefill) for e in examples]
        device = batch.input_ids.device
        rows = {key: self._kept[key].to(device) for key in keys if key in self._kept}
        missing = list(dict.fromkeys(key for key in keys if key not in rows))
        if missing:
            rows.update(self._compute(missing, dtype))
        _, predicted = reply_targets(batch)
        first = next(iter(rows.values()))
        logits = first.new_zeros((*predicted.shape, first.shape[-1]))
        for row, key in enumerate(keys):
            logits[row, predicted[row]] = rows[key]
        return logits

    def _compute(self, keys: list[tuple[str, str, str]], dtype: str) -> dict[tuple[str, str, str], Tensor]:
        """The reply-position logits of the examples ``keys``, in one forward pass; kept while the budget lasts."""
        instructions, replies, prefills = (list(column) for column in zip(*keys))
        batch = self.model.tokenize_replies(instructions, replies, prefills=prefills)
        with torch.no_grad(), autocast(self.model, dtype):
            logits = self.model.reply_logits(batch)
        _, predicted = reply_targets(batch)
        computed = {}
        for row, key in enumerate(keys):
            computed[key] = reply = logits[row, predicted[row]]  # a mask index copies: no view of the batch
            size = reply.numel() * reply.element_size()
            if self.kept_bytes + size <= self.budget_bytes:
                self._kept[key] = reply.to("cpu")
                self.kept_bytes += size
        return computed
