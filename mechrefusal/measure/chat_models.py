"""`ChatModel`: a chat model that answers whole conversations (PAIR's attacker, LLM judges).

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``.
Implementations: a model loaded in-process with `mechrefusal.load`, or any OpenAI-compatible endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Message = dict[str, str]
"""One chat message: ``{"role": ..., "content": ...}``."""


@runtime_checkable
class ChatModel(Protocol):
    """Anything that continues conversations with an assistant message."""

    name: str
    """What answers (a load spec or ``model@endpoint``), for provenance and labels."""

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[str]:
        """The assistant's next message for each conversation, in order."""
        ...
