"""`python -m mechrefusal.serve [SPEC] --host 127.0.0.1 --port N`: a minimal OpenAI-compatible server.

Serves any `mechrefusal.load` spec (the embedded model, a checkpoint, a .gguf file) as
``POST /v1/chat/completions`` (``messages``, ``max_tokens``, ``temperature``, ``seed``; ``n`` = 1) and
``GET /v1/models``, so a checkpoint can be PAIR's attacker or an LLM judge behind an endpoint
(``openai:http://HOST:PORT/v1#NAME``). One request generates at a time. Prints
``serving SPEC on http://HOST:PORT/v1`` once listening (``--port 0`` picks a free port).
For local use: no authentication, no streaming.
"""

from __future__ import annotations

import json
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

from mechrefusal.core.cli import SettingsParser
from mechrefusal.core.errors import MechrefusalError, SettingError
from mechrefusal.measure.chat_models import LocalChatModel, check_conversation
from mechrefusal.models import DEFAULT_MODEL, load

MAX_BODY = 16 * 1024 * 1024
"""Request bodies above this many bytes are refused (413)."""


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
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or 256
        temperature = request.get("temperature")
        seed = request.get("seed")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise SettingError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
        if not isinstance(temperature, (int, float, type(None))) or not isinstance(seed, (int, type(None))):
            raise SettingError(f"temperature must be a number and seed an integer, got {temperature!r}, {seed!r}.")
        with self.lock:
            reply = self.chat_model.chat(
                [messages],  # type: ignore[list-item]
                max_tokens=max_tokens,
                temperature=float(temperature or 0.0),
                seed=seed or 0,
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
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The request body is over {MAX_BODY} bytes.")
        try:
            request = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "The request body is not JSON.")
        if not isinstance(request, dict):
            return self._error(HTTPStatus.BAD_REQUEST, "The request body must be a JSON object.")
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

    def _error(self, status: HTTPStatus, message: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(status, {"error": {"message": message, "type": kind, "code": status.value}})

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    parser = SettingsParser(prog="python -m mechrefusal.serve", description=__doc__)
    parser.add_argument("spec", nargs="?", default=None, help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--name", default=None, help="the model name clients send (default: the spec)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N")
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
