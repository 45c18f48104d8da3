"""`Model`: a TransformerBridge with its tokenizer, chat format and left-padded batching."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import cast

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mechrefusal.core.directions import DirectionSet
from mechrefusal.core.errors import SettingError
from mechrefusal.models.chat import ChatFormat
from mechrefusal.models.hooks import Interventions, flatten

MAX_BATCH_TOKENS = 8192
"""A batch of more padded tokens (rows x longest prompt) is split in halves until it fits or is one row.
Long prompts (jailbreak templates of up to 1,024 tokens) then pad little, and the bridge's eager attention
keeps its score matrices small. On the embedded model, the 15 human-template prompts of 5 HarmBench
behaviours (116-930 tokens) took 20.0 s instead of 31.9 s to project on every layer, and 40.2 s instead
of 72.4 s to answer (64 tokens, bf16; `benchmarks/batch_budget.py`). Batches of the bundled prompts (at
most 87 tokens x 64 rows) are never split."""


@dataclass(repr=False)
class Batch:
    """Left-padded token ids of chat prompts, so position -1 is every row's last prompt token."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __repr__(self) -> str:
        batch, seq = self.input_ids.shape
        return f"Batch(batch={batch}, seq={seq}, tokens={int(self.attention_mask.sum())})"


@dataclass(repr=False)
class ReplyBatch(Batch):
    """Right-padded prompt + reply + end-of-turn token ids; ``reply_mask`` marks the reply tokens, so
    ``logits[:, :-1][reply_mask[:, 1:]]`` are the predictions of exactly those tokens. Right padding
    leaves no fully masked attention row, which keeps bf16 training free of NaN gradients."""

    reply_mask: Bool[Tensor, "batch seq"]

    def __repr__(self) -> str:
        batch, seq = self.input_ids.shape
        return f"ReplyBatch(batch={batch}, seq={seq}, reply_tokens={int(self.reply_mask.sum())})"

    @cached_property
    def predictions(self) -> slice:
        """The positions whose logits predict some row's reply tokens (position ``p`` predicts token
        ``p + 1``): the only logits a reply loss reads, so `Model.reply_logits` computes just these.
        Computed once per batch (it reads the mask back from the device), though the model, the
        reference and the loss each ask for it."""
        columns = self.reply_mask.any(dim=0).nonzero().flatten().tolist()
        return slice(columns[0] - 1, columns[-1])


def check_instructions(instructions: Sequence[str], what: str = "instructions") -> None:
    """Raise a clear error unless ``instructions`` is a non-empty list (a bare string is one mistake)."""
    if isinstance(instructions, str) or not instructions:
        raise SettingError(f"{what} must be a non-empty list of instructions, not a single string or an empty list.")


class Model:
    """A chat model under TransformerLens: the bridge, the tokenizer and how to prompt it.

    Attributes:
        bridge: the ``TransformerBridge`` (hooks, caches, generation).
        tokenizer: the Hugging Face tokenizer.
        chat: the chat format (template rendering, post-instruction token ids).
        spec: what was loaded (a name, a directory or a file), for provenance.
        directions: the directions saved with a checkpoint (a ``DirectionSet``), or ``None``.
    """

    def __init__(
        self, bridge: TransformerBridge, tokenizer: PreTrainedTokenizerBase, *, spec: str, system: str | None = None
    ) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.spec = spec
        self.chat = ChatFormat(tokenizer, system=system)
        self.directions: DirectionSet | None = None
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def __repr__(self) -> str:
        return (
            f"Model({self.spec!r}, n_layers={self.n_layers}, d_model={self.d_model}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    @property
    def n_layers(self) -> int:
        return self.bridge.cfg.n_layers

    @property
    def d_model(self) -> int:
        return self.bridge.cfg.d_model

    @property
    def hf_model(self) -> PreTrainedModel:
        """The wrapped Hugging Face model (weight edits and ``save_pretrained`` go here)."""
        return cast(PreTrainedModel, self.bridge.original_model)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the token embedding's device (a ``device_map`` may spread the layers)."""
        return cast(torch.nn.Embedding, self.hf_model.get_input_embeddings()).weight.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def post_instruction_positions(self) -> list[int]:
        """Post-instruction positions counted from the end of the prompt, e.g. ``[-5, ..., -1]``."""
        return self.chat.post_instruction_positions

    @property
    def chat_format(self) -> str:
        """The chat template rendered around the placeholder ``{instruction}``: what a cached reply of this model
        depends on besides its weights (a system message, say)."""
        return self.chat.prompt("{instruction}")

    def check_same_tokenizer(self, reference: Model) -> None:
        """One sentence unless ``reference`` splits text into the same tokens (a KL between the two is read per
        token)."""
        if self.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
            raise SettingError(
                f"The model {self.spec!r} and the reference {reference.spec!r} have different tokenizers."
            )

    def format(self, instructions: Sequence[str]) -> list[str]:
        """Chat prompts for plain instructions, rendered with the tokenizer's own template."""
        return [self.chat.prompt(text) for text in instructions]

    def tokenize(self, instructions: Sequence[str]) -> Batch:
        """One left-padded batch of chat prompts with its attention mask, on the model's device."""
        check_instructions(instructions)
        return self.tokenize_prompts(self.format(instructions))

    def tokenize_prompts(self, prompts: Sequence[str]) -> Batch:
        """One left-padded batch of prompts already rendered with the chat template (whole conversations)."""
        input_ids, attention_mask = self._pad([self.chat.encode(prompt) for prompt in prompts])
        return Batch(input_ids, attention_mask)

    def tokenize_replies(
        self,
        instructions: Sequence[str],
        replies: Sequence[str],
        *,
        end_of_turn: bool = True,
        prefills: Sequence[str] | None = None,
    ) -> ReplyBatch:
        """Prompts followed by given replies and (unless ``end_of_turn=False``, for reply openings such as
        an attack's target) the end-of-turn token (training and loss batches). ``prefills``: per row, a start
        of the assistant turn placed before the reply and not part of it (``reply_mask`` leaves it out)."""
        if len(instructions) != len(replies) or not instructions:
            raise SettingError("tokenize_replies needs one reply per instruction and at least one of each.")
        if prefills is not None and len(prefills) != len(replies):
            raise SettingError("tokenize_replies needs one prefill (possibly empty) per reply.")
        end = [self.tokenizer.eos_token_id] if end_of_turn else []
        replies_ids = [self.tokenizer(reply, add_special_tokens=False)["input_ids"] + end for reply in replies]
        prompts_ids = [self.chat.encode(prompt) for prompt in self.format(instructions)]
        if prefills is not None:
            prompts_ids = [
                prompt + self.tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else prompt
                for prompt, prefill in zip(prompts_ids, prefills)
            ]
        input_ids, attention_mask = self._pad([p + r for p, r in zip(prompts_ids, replies_ids)], left=False)
        reply_mask = torch.zeros(attention_mask.shape, dtype=torch.bool)  # filled on the CPU, moved once
        for i, (prompt, reply) in enumerate(zip(prompts_ids, replies_ids)):
            reply_mask[i, len(prompt) : len(prompt) + len(reply)] = True
        return ReplyBatch(input_ids, attention_mask, reply_mask.to(self.device))

    def _pad(self, rows: list[list[int]], left: bool = True) -> tuple[Tensor, Tensor]:
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row)
            attention_mask[i, span] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def batches(
        self, instructions: Sequence[str], batch_size: int, *, rendered: bool = False
    ) -> Iterator[tuple[list[int], Batch]]:
        """Yield ``(indices, batch)`` over the instructions, grouped by length to waste little padding;
        ``rendered=True`` takes prompts already rendered with the chat template (whole conversations)."""
        check_instructions(instructions)
        if batch_size < 1:
            raise SettingError(f"batch_size must be at least 1, got {batch_size}.")
        tokenize = self.tokenize_prompts if rendered else self.tokenize
        order = sorted(range(len(instructions)), key=lambda i: len(instructions[i]))
        for start in range(0, len(order), batch_size):
            yield from _within_budget(order[start : start + batch_size], instructions, tokenize)

    @contextmanager
    def intervene(self, *interventions: Interventions) -> Iterator[None]:
        """Apply interventions (``Ablate``, ``Add``, ...) to every forward pass inside the block; only the
        hooks added here are removed when it exits, even on an exception."""
        hooks = [hook for intervention in flatten(*interventions) for hook in intervention.hooks(self)]
        with self.bridge.hooks(fwd_hooks=hooks):
            yield

    def logits(self, batch: Batch) -> Float[Tensor, "batch seq vocab"]:
        """Logits of a batch through the bridge (hooks active)."""
        return self.bridge(batch.input_ids, attention_mask=batch.attention_mask)

    def reply_logits(self, batch: ReplyBatch, forward: Callable | None = None) -> Float[Tensor, "batch window vocab"]:
        """Logits at ``batch.predictions`` only, without a KV cache (hooks active). The unembedding and the
        losses' softmax over the vocabulary then skip the prompt positions: a third of a training step's
        time on the embedded model. ``forward`` runs the model (default: the bridge)."""
        window = batch.predictions
        keep = torch.arange(window.start, window.stop, device=batch.input_ids.device)
        return (forward or self.bridge)(
            batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, logits_to_keep=keep
        )


def _within_budget(
    indices: list[int], instructions: Sequence[str], tokenize: Callable[[list[str]], Batch]
) -> Iterator[tuple[list[int], Batch]]:
    """``(indices, batch)`` of the instructions at ``indices``, split in halves (recursively) while the
    padded batch exceeds `MAX_BATCH_TOKENS`."""
    batch = tokenize([instructions[i] for i in indices])
    rows, width = batch.input_ids.shape
    if rows == 1 or rows * width <= MAX_BATCH_TOKENS:
        yield indices, batch
        return
    half = rows // 2
    yield from _within_budget(indices[:half], instructions, tokenize)
    yield from _within_budget(indices[half:], instructions, tokenize)
