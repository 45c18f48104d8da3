"""`python -m mechrefusal.serve [SPEC] --host 127.0.0.1 --port N`: a minimal OpenAI-compatible server.

Serves any `mechrefusal.load` spec (the embedded model, a checkpoint, a .gguf file) as
``POST /v1/chat/completions`` (``messages``, ``max_tokens``, ``temperature``, ``seed``; ``n`` = 1) and
``GET /v1/models``, so a checkpoint can be PAIR's attacker or an LLM judge behind an endpoint
(``openai:http://HOST:PORT/v1#NAME``). One request generates at a time. Prints
``serving SPEC on http://HOST:PORT/v1`` once listening (``--port 0`` picks a free port).
For local use: no authentication, no streaming.

A malformed request (no or a bad ``Content-Length``, a body that is not a JSON object, ``max_tokens`` not a
positive integer, ``temperature`` outside [0, 2]) gets HTTP 400 with an OpenAI-shaped one-sentence error
(``{"error": {"message": ..., "type": "invalid_request_error"}}``); a body over `MAX_BODY` gets 413.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

from mechrefusal.core.cli import SettingsParser, add_device_argument
from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.measure.chat_models import LocalChatModel, check_conversation
from mechrefusal.models import DEFAULT_MODEL, load

MAX_BODY = 1024 * 1024
"""Request bodies above this many bytes (1 MiB) are refused (413)."""

DEFAULT_MAX_TOKENS = 256
"""The reply's token budget when a request gives neither ``max_completion_tokens`` nor ``max_tokens``."""

READ_TIMEOUT = 30.0
"""Seconds a request body may stall before the server answers 408 and drops the connection."""


class ChatServer(ThreadingHTTPServer):
    """An HTTP server that answers chat completions with one `LocalChatModel`, one request at a time."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], chat_model: LocalChatModel, name: str) -> None:
        super().__init__(address, ChatHandler)
        self.chat_model = chat_model
        self.model_name = name
        self.lock = Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The chat-completion response to one request body (a `SettingError` for a bad request)."""
        messages = request.get("messages")
        check_conversation(messages)  # type: ignore[arg-type]
        if request.get("n", 1) != 1:
            raise SettingError(f"This server returns one choice per request; got n={request.get('n')!r}.")
        max_tokens = _max_tokens(request)
        temperature = request.get("temperature", 0.0)
        seed = request.get("seed", 0)
        if temperature is None:
            temperature = 0.0
        if seed is None:
            seed = 0
        if not _is_number(temperature) or not 0.0 <= temperature <= 2.0:
            raise SettingError(f"temperature must be a number between 0 and 2, got {temperature!r:.40}.")
        if not _is_integer(seed) or not -(2**63) <= seed < 2**63:
            raise SettingError(f"seed must be a 64-bit integer, got {seed!r:.40}.")
        with self.lock:
            reply = self.chat_model.chat(
                [messages],  # type: ignore[list-item]
                max_tokens=max_tokens,
                temperature=float(temperature),
                seed=seed,
            )[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        }


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path.rstrip("/") != "/v1/models":
            return self._error(HTTPStatus.NOT_FOUND, f"No route GET {self.path}; try /v1/models.")
        model = {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "mechrefusal"}
        self._send(HTTPStatus.OK, {"object": "list", "data": [model]})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(HTTPStatus.NOT_FOUND, f"No route POST {self.path}; try /v1/chat/completions.")
        request, status, problem = self._read_json()
        if problem:
            return self._error(status, problem)
        if request.get("model") not in (None, self.server.model_name):
            return self._error(
                HTTPStatus.NOT_FOUND,
                f"Model {request['model']!r} is not served here; this serves {self.server.model_name!r}.",
            )
        if request.get("stream"):
            return self._error(HTTPStatus.BAD_REQUEST, "Streaming is not supported; send stream=false.")
        try:
            response = self.server.complete(request)
        except SettingError as error:
            return self._error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception as error:  # a generation failure answers 500 and keeps the server up
            self.log_error("generation failed: %r", error)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"Generation failed: {error}")
        self._send(HTTPStatus.OK, response)

    def _read_json(self) -> tuple[dict[str, Any], HTTPStatus, str]:
        """The request body as a JSON object, or ({}, status, one-sentence problem) when it is not one."""
        bad = HTTPStatus.BAD_REQUEST
        header = self.headers.get("Content-Length")
        if header is None:
            return {}, bad, "The request needs a Content-Length header (chunked bodies are not supported)."
        digits = header.strip()
        if not re.fullmatch(r"[0-9]+", digits):
            return {}, bad, f"Content-Length must be a non-negative integer, got {header!r:.40}."
        if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
            return {}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The request body is over {MAX_BODY} bytes."
        length = int(digits)
        self.connection.settimeout(READ_TIMEOUT)  # a client that stalls mid-body is dropped, not waited on
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            return {}, HTTPStatus.REQUEST_TIMEOUT, f"The request body did not arrive within {READ_TIMEOUT:g} s."
        finally:
            self.connection.settimeout(None)
        if len(body) < length:
            return {}, bad, f"The request body ended after {len(body)} of its {length} bytes."
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return {}, bad, "The request body is not JSON."
        if not isinstance(request, dict):
            return {}, bad, "The request body must be a JSON object."
        return request, HTTPStatus.OK, ""

    def _error(self, status: HTTPStatus, message: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        # A refused request's body may be unread, so the connection closes rather than carry another request.
        self._send(status, {"error": {"message": message, "type": kind, "code": status.value}}, close=True)

    def _send(self, status: HTTPStatus, payload: dict[str, Any], close: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        self.wfile.write(body)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _max_tokens(request: dict[str, Any]) -> int:
    """The request's token budget: ``max_completion_tokens``, else ``max_tokens``, else the default."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if value is None:
            continue
        if not _is_integer(value) or value < 1:
            raise SettingError(f"{key} must be a positive integer, got {value!r:.40}.")
        return int(value)
    return DEFAULT_MAX_TOKENS


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(prog="python -m mechrefusal.serve", description=__doc__)
    parser.add_argument("spec", nargs="?", default=None, help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--name", default=None, help="the model name clients send (default: the spec)")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}.")
    try:
        chat_model = LocalChatModel(load(args.spec, device=args.device))
    except MechrefusalError as error:
        parser.error(str(error))
    name = args.name or args.spec or DEFAULT_MODEL
    try:
        server = ChatServer((args.host, args.port), chat_model, name)
    except OSError as error:
        parser.error(f"Cannot listen on {args.host}:{args.port} ({error.strerror or error}); pick another --port.")
    print(f"serving {name} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
