"""`ReferenceLogits`: the original model's reply logits, computed once per harmless example and kept for the
whole training job.

The utility loss is the KL from the fixed original model on harmless examples, and every round (and every
evaluation) draws the same examples again: after the first round the reference's forward pass, about a
fifth of a training step, becomes a lookup. Kept logits are the ones a fresh forward pass would give, up to
float rounding (an example's rows do not depend on what else is in its batch, right padding leaves its
positions where they are). Entries are kept in CPU memory until they fill ``budget_bytes``; later examples
are computed each time they are drawn. `ReferenceLogits.for_process` keeps them for the rest of the process, so
a later training job on the same reference finds them: the reproduce pipeline's fail-closed and baseline stages
start where its round 0 left off, and `ReferenceLogits.release_process` drops them after its last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from mechrefusal.core.errors import SettingError
from mechrefusal.core.memory import memory_limit_bytes
from mechrefusal.core.precision import resolve
from mechrefusal.measure.losses import reply_targets
from mechrefusal.models import Model, ReplyBatch
from mechrefusal.models.autocast import autocast
from mechrefusal.models.export import weights_digest
from mechrefusal.train.targets import Example

MAX_BUDGET_BYTES = 8 * 2**30
"""At most this much is kept: about 1,300 examples of 32 reply tokens over a 49k-token vocabulary in float32
(the embedded model's quick job keeps about 460, 2.6 GiB)."""


def default_budget_bytes() -> int:
    """A quarter of the memory this process may use (the machine's or its container's), at most
    `MAX_BUDGET_BYTES` (nothing kept where it cannot be read)."""
    memory = memory_limit_bytes()
    return 0 if memory is None else min(memory // 4, MAX_BUDGET_BYTES)


def reference_logits(reference: Model | ReferenceLogits) -> ReferenceLogits:
    """``reference`` itself when it keeps logits already, else a new `ReferenceLogits` of that model."""
    return reference if isinstance(reference, ReferenceLogits) else ReferenceLogits(reference)


Key = tuple[str, str, str, str]
"""What kept logits depend on besides the reference: the compute dtype, the instruction, the reply, the prefill."""


@dataclass
class Kept:
    """Reply logits of one reference by `Key`; ``owner`` names the reference where they outlive one job (its
    weights, chat format and device)."""

    owner: str
    logits: dict[Key, Tensor] = field(default_factory=dict)
    bytes: int = 0


_in_process: Kept | None = None
"""What `ReferenceLogits.for_process` keeps: one reference's logits at a time."""


class ReferenceLogits:
    """The reference model's logits at each example's reply positions, kept per example."""

    def __init__(self, reference: Model, budget_bytes: int | None = None, *, kept: Kept | None = None) -> None:
        self.model = reference
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else budget_bytes
        self._kept = Kept(owner="") if kept is None else kept

    @classmethod
    def for_process(cls, reference: Model, budget_bytes: int | None = None) -> ReferenceLogits:
        """Logits of ``reference`` kept for the rest of the process: another `for_process` of the same weights,
        chat format and device starts with them (those of another reference are dropped, so at most one
        budget's worth stays in memory)."""
        global _in_process
        owner = _owner(reference)
        if _in_process is None or _in_process.owner != owner:
            _in_process = Kept(owner)
        return cls(reference, budget_bytes, kept=_in_process)

    @staticmethod
    def release_process() -> None:
        """Drop what `for_process` keeps (the reproduce pipeline, once its last training stage is done)."""
        global _in_process
        _in_process = None

    @property
    def kept_bytes(self) -> int:
        return self._kept.bytes

    def __repr__(self) -> str:
        return (
            f"ReferenceLogits(examples={len(self._kept.logits)}, kept_bytes={self.kept_bytes}, "
            f"budget={self.budget_bytes})"
        )

    def check(self, model: Model) -> None:
        """One sentence unless the reference reads the trained ``model``'s examples as the same tokens in the same
        chat prompts (the kept logits are looked up by text and laid on ``model``'s reply positions)."""
        model.check_same_tokenizer(self.model)
        if model.chat_format != self.model.chat_format:
            raise SettingError(
                f"The model {model.spec!r} and its reference {self.model.spec!r} render chat prompts differently "
                "(a system message, say), so the utility KL would compare replies to different prompts; "
                "load both alike."
            )

    def __call__(
        self, examples: Sequence[Example], batch: ReplyBatch, dtype: str
    ) -> Float[Tensor, "batch window vocab"]:
        """The reference's logits at ``batch.predictions`` for ``examples``, ``batch``'s rows in order (zero
        where a row has no reply token; the reply losses never read those), computing in ``dtype`` only the
        examples not kept yet."""
        dtype = resolve(dtype, self.model.device).dtype  # "auto" and what it resolves to are one key
        keys = [(dtype, e.instruction, e.reply, e.prefill) for e in examples]
        device = batch.input_ids.device
        kept = self._kept.logits
        rows = {key: kept[key].to(device) for key in keys if key in kept}
        missing = list(dict.fromkeys(key for key in keys if key not in rows))
        if missing:
            rows.update(self._compute(missing, dtype))
        _, predicted = reply_targets(batch)
        first = next(iter(rows.values()))
        logits = first.new_zeros((*predicted.shape, first.shape[-1]))
        for row, key in enumerate(keys):
            logits[row, predicted[row]] = rows[key]
        return logits

    def _compute(self, keys: list[Key], dtype: str) -> dict[Key, Tensor]:
        """The reply-position logits of the examples ``keys`` (all of ``dtype``), in one forward pass; kept while
        the budget lasts."""
        instructions, replies, prefills = (list(column) for column in zip(*(key[1:] for key in keys)))
        batch = self.model.tokenize_replies(instructions, replies, prefills=prefills)
        with torch.no_grad(), autocast(self.model, dtype):
            logits = self.model.reply_logits(batch)
        _, predicted = reply_targets(batch)
        computed = {}
        for row, key in enumerate(keys):
            computed[key] = reply = logits[row, predicted[row]]  # a mask index copies: no view of the batch
            size = reply.numel() * reply.element_size()
            if self.kept_bytes + size <= self.budget_bytes:
                self._kept.logits[key] = reply.to("cpu")
                self._kept.bytes += size
        return computed


def _owner(reference: Model) -> str:
    """What a reference's logits depend on besides the examples: its weights, chat format and device."""
    digest = weights_digest(reference)
    digest.update(f"{reference.chat_format}|{reference.device}".encode())
    return digest.hexdigest()
