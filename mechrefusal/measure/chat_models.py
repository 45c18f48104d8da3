"""`ChatModel`: a chat model that answers whole conversations (PAIR's attacker, LLM judges).

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``.
Implementations: `LocalChatModel`, a model loaded in-process with `mechrefusal.load`, and
`EndpointChatModel`, any OpenAI-compatible endpoint (vLLM, a llama.cpp server, a hosted API,
``python -m mechrefusal.serve``) through the official ``openai`` client. `load_chat_model` builds
either from one spec string. A `ContinuingChatModel` (the local one) also continues a reply begun for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from mechrefusal.core.errors import EndpointError, SettingError
from mechrefusal.measure.generation import generate
from mechrefusal.models import DEFAULT_MODEL, Model, load
from mechrefusal.models.chat import _renders_system

Message = dict[str, str]
"""One chat message: ``{"role": ..., "content": ...}``."""

ROLES = ("system", "user", "assistant")
ENDPOINT_PREFIX = "openai:"
"""`load_chat_model` reads ``"openai:<base_url>#<model>"`` as an endpoint."""

logger = logging.getLogger(__name__)


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


@runtime_checkable
class ContinuingChatModel(ChatModel, Protocol):
    """A chat model that can also continue an assistant message begun for it (a prefilled reply), as the
    reference PAIR seeds its attacker's JSON; `LocalChatModel` can, a chat-completions endpoint cannot."""

    def continue_chat(
        self,
        conversations: Sequence[Sequence[Message]],
        begun: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[str]:
        """The assistant's next message for each conversation when it begins with ``begun`` (included)."""
        ...


def check_conversation(conversation: Sequence[Message]) -> None:
    """Raise a clear error unless ``conversation`` is a non-empty list of messages with known roles."""
    if isinstance(conversation, (str, dict)) or not conversation:
        raise SettingError("A conversation must be a non-empty list of messages {'role': ..., 'content': ...}.")
    for message in conversation:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise SettingError(f"Each message needs a role among {', '.join(ROLES)}, got {message!r:.80}.")
        if not isinstance(message.get("content"), str):
            raise SettingError(f"Each message needs a text content, got {message!r:.80}.")


class LocalChatModel:
    """A model loaded in-process: conversations rendered with its tokenizer's chat template, replies
    generated in batches through the bridge (greedy at temperature 0, else sampled with ``seed``).

    A template without a system role (Gemma's) gets a leading system message at the start of the
    first user message instead, as `mechrefusal.models.chat` does.
    """

    def __init__(self, model: Model | str | None = None, *, batch_size: int = 16) -> None:
        self.model = model if isinstance(model, Model) else load(model)
        self.name = self.model.spec
        self.batch_size = batch_size
        self._system_role = _renders_system(self.model.tokenizer)

    def __repr__(self) -> str:
        return f"LocalChatModel({self.name!r}, n_parameters={self.n_parameters})"

    @property
    def n_parameters(self) -> int:
        """The model's parameter count (PAIR calls an attacker under a billion weak)."""
        return sum(parameter.numel() for parameter in self.model.hf_model.parameters())

    def render(self, conversation: Sequence[Message]) -> str:
        """The conversation as one prompt ending where the assistant's next message starts."""
        check_conversation(conversation)
        messages = [{"role": message["role"], "content": message["content"]} for message in conversation]
        if messages[0]["role"] == "system" and not self._system_role and len(messages) > 1:
            system, first = messages[0], messages[1]
            messages = [{**first, "content": f"{system['content']}\n\n{first['content']}"}, *messages[2:]]
        elif messages[0]["role"] == "system" and not self._system_role:
            messages = [{"role": "user", "content": messages[0]["content"]}]
        return self.model.chat.render(messages)

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[str]:
        return self.continue_chat(conversations, "", max_tokens=max_tokens, temperature=temperature, seed=seed)

    def continue_chat(
        self,
        conversations: Sequence[Sequence[Message]],
        begun: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[str]:
        if not conversations:
            return []
        prompts = [self.render(conversation) + begun for conversation in conversations]
        sample = temperature > 0
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            replies = generate(
                self.model,
                prompts,
                rendered=True,
                max_new_tokens=max_tokens,
                do_sample=sample,
                temperature=temperature if sample else 1.0,
                batch_size=self.batch_size,
            )
        return [begun + reply for reply in replies]


class EndpointChatModel:
    """Any OpenAI-compatible chat endpoint, through the official ``openai`` client.

    Connection failures, timeouts, server errors (5xx, 429) and malformed replies are retried up to
    ``retries`` times with exponential backoff (``backoff`` seconds, doubled each time); then one
    `EndpointError` names the endpoint. A request the server rejects (another 4xx: a wrong model name
    or API key) is not retried. The API key defaults to ``$OPENAI_API_KEY`` (a local server needs none).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        retries: int = 3,
        timeout: float = 60.0,
        backoff: float = 1.0,
    ) -> None:
        from openai import OpenAI

        if retries < 0 or timeout <= 0 or backoff < 0:
            raise SettingError(
                f"retries and backoff must be at least 0 and timeout positive, got {retries}, {backoff}, {timeout}."
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"{model}@{self.base_url}"
        self.retries = retries
        self.backoff = backoff
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # local servers ignore the key
        self._client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"EndpointChatModel({self.base_url!r}, {self.model!r}, retries={self.retries})"

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[str]:
        for conversation in conversations:
            check_conversation(conversation)
        return [self._complete(conversation, max_tokens, temperature, seed) for conversation in conversations]

    def _complete(self, conversation: Sequence[Message], max_tokens: int, temperature: float, seed: int) -> str:
        import openai

        messages: Any = [{"role": message["role"], "content": message["content"]} for message in conversation]
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed, n=1
                )
                text = _reply_text(response)
                if text is not None:
                    return text
                reason = "malformed reply: no message text in a first choice"
            except openai.APIStatusError as error:
                if error.status_code < 500 and error.status_code not in (408, 429):
                    raise EndpointError(
                        f"The chat endpoint {self.base_url} rejected the request for model {self.model!r} "
                        f"(HTTP {error.status_code}: {_status_message(error)}); check the model name and API key."
                    ) from None
                reason = f"HTTP {error.status_code}"
            except openai.APITimeoutError:
                reason = "timed out"
            except openai.APIConnectionError:
                reason = "no connection"
            except (openai.APIError, ValueError) as error:  # a body that is not JSON, or not a completion
                reason = f"malformed reply: {' '.join(str(error).split())[:120]}"
            logger.warning("chat endpoint %s, try %d of %d: %s", self.base_url, attempt + 1, self.retries + 1, reason)
        raise EndpointError(
            f"The chat endpoint {self.base_url} (model {self.model!r}) gave no usable reply in {self.retries + 1} "
            f"{'try' if self.retries == 0 else 'tries'} (last: {reason}); check that an OpenAI-compatible "
            "server runs there and serves that model."
        )


def _reply_text(response: Any) -> str | None:
    """The first choice's message text, or ``None`` when the response does not have one."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        return None
    content = getattr(getattr(choices[0], "message", None), "content", None)
    return content if isinstance(content, str) else None


def _status_message(error: Any) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("error", body)
    message = detail.get("message") if isinstance(detail, dict) else None
    return " ".join(str(message or error.message).split())[:200]


def load_chat_model(
    spec: str | None = None, *, device: str = "auto", retries: int = 3, timeout: float = 60.0
) -> LocalChatModel | EndpointChatModel:
    """A chat model from one spec: ``"openai:<base_url>#<model>"`` is an OpenAI-compatible endpoint (API
    key from ``$OPENAI_API_KEY``, or none); anything else is a `mechrefusal.load` spec run in-process
    (``None`` or ``"embedded"``: the embedded SmolLM2-135M-Instruct)."""
    if spec is not None and spec.startswith(ENDPOINT_PREFIX):
        base_url, _, model = spec[len(ENDPOINT_PREFIX) :].rpartition("#")
        if not base_url or not model:
            raise SettingError(
                f"Endpoint spec {spec!r} needs a base URL and a model: 'openai:<base_url>#<model>', "
                "e.g. 'openai:http://127.0.0.1:8000/v1#my-model'."
            )
        return EndpointChatModel(base_url, model, retries=retries, timeout=timeout)
    return LocalChatModel(load(None if spec in (None, "embedded", DEFAULT_MODEL) else spec, device=device))
