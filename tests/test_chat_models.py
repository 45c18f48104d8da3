"""Chat models: the toy answers whole conversations in-process, and the same answers come back through
the openai client from `python -m mechrefusal.serve` on loopback; dead and malformed endpoints fail
with one clear error after their retries."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mechrefusal import data
from mechrefusal.core.errors import EndpointError, SettingError
from mechrefusal.measure.chat_models import (
    ChatModel,
    ContinuingChatModel,
    EndpointChatModel,
    LocalChatModel,
    load_chat_model,
)
from mechrefusal.models.tiny import build_tiny_model
from mechrefusal.serve import MAX_BODY
from mechrefusal.serve import main as serve_main
from tests.toy import COMPLIANCE, REFUSAL

ROOT = Path(__file__).resolve().parent.parent
HARMFUL = data.load("harmful", "train")[:3]
HARMLESS = data.load("harmless", "train")[:3]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@contextmanager
def served(spec: str | Path, *extra: str) -> Iterator[str]:
    """``python -m mechrefusal.serve SPEC --port 0`` as a subprocess; yields its printed base URL."""
    with tempfile.TemporaryFile("w+") as log:  # the server logs each request on stderr
        process = subprocess.Popen(
            [sys.executable, "-m", "mechrefusal.serve", str(spec), "--port", "0", "--device", "cpu", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # blocks until the server listens (or exits)
            match = re.fullmatch(r"serving (.+) on (http://127\.0\.0\.1:\d+/v1)\n", line)
            if not match:
                log.seek(0)
                pytest.fail(f"the server printed {line!r}; its stderr: {log.read()[-2000:]}")
            yield match.group(2)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def toy_url(toy_dir) -> Iterator[str]:
    with served(toy_dir, "--name", "toy") as url:
        yield url


@contextmanager
def junk_server(body: bytes) -> Iterator[tuple[str, list[str]]]:
    """A stdlib server answering every request with status 200 and ``body``; yields its URL and the
    paths it was asked for."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


def test_local_chat_model_answers_conversations_like_the_toy(toy):
    chat_model = LocalChatModel(toy)
    assert isinstance(chat_model, ChatModel) and chat_model.name == toy.spec
    replies = chat_model.chat([user(text) for text in HARMFUL + HARMLESS], max_tokens=12)
    assert replies == [REFUSAL] * 3 + [COMPLIANCE] * 3
    # a longer conversation is rendered whole, ending with the assistant's turn
    conversation = [*user(HARMLESS[0]), {"role": "assistant", "content": COMPLIANCE}, *user(HARMFUL[0])]
    prompt = chat_model.render(conversation)
    assert prompt.count("<|im_start|>user") == 2 and prompt.endswith("<|im_start|>assistant\n")
    assert chat_model.chat([conversation], max_tokens=12) == [REFUSAL]


def test_a_begun_reply_is_continued_and_steers_the_rest(toy):
    chat_model = LocalChatModel(toy)
    assert isinstance(chat_model, ContinuingChatModel)
    assert not isinstance(EndpointChatModel("http://127.0.0.1:9/v1", "m"), ContinuingChatModel)
    # the toy refuses a harmful request; begun with its compliance's first words, it complies
    assert chat_model.continue_chat([user(HARMFUL[0])], "I cannot", max_tokens=12) == [REFUSAL]
    assert chat_model.continue_chat([user(HARMFUL[0])], "Here is", max_tokens=12) == [COMPLIANCE]
    assert chat_model.continue_chat([user(HARMFUL[0])], "", max_tokens=12) == chat_model.chat(
        [user(HARMFUL[0])], max_tokens=12
    )


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(toy):
    import torch

    chat_model = LocalChatModel(toy)
    conversations = [user(text) for text in HARMFUL]
    state = torch.random.get_rng_state()
    first = chat_model.chat(conversations, max_tokens=8, temperature=5.0, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert chat_model.chat(conversations, max_tokens=8, temperature=5.0, seed=3) == first
    assert chat_model.chat(conversations, max_tokens=8, temperature=5.0, seed=4) != first


def test_a_template_without_system_role_gets_the_system_text_in_the_user_message(tmp_path):
    model = build_tiny_model(tmp_path, template="no-system")
    chat_model = LocalChatModel(model)
    prompt = chat_model.render([{"role": "system", "content": "Be brief."}, *user("Name a colour")])
    assert "<start_of_turn>user\nBe brief.\n\nName a colour<end_of_turn>" in prompt
    with pytest.raises(SettingError, match="role among system, user, assistant"):
        chat_model.render([{"role": "robot", "content": "hi"}])


def test_the_server_gives_the_local_replies_through_the_openai_client(toy, toy_url):
    endpoint = EndpointChatModel(toy_url, "toy", retries=0)
    assert endpoint.name == f"toy@{toy_url}"
    conversations = [user(text) for text in HARMFUL[:2] + HARMLESS[:2]]
    replies = endpoint.chat(conversations, max_tokens=12)
    assert replies == LocalChatModel(toy).chat(conversations, max_tokens=12) == [REFUSAL] * 2 + [COMPLIANCE] * 2
    assert load_chat_model(f"openai:{toy_url}#toy").chat(conversations[:1], max_tokens=12) == [REFUSAL]
    with urllib.request.urlopen(f"{toy_url}/models", timeout=10) as response:
        assert [model["id"] for model in json.load(response)["data"]] == ["toy"]


def test_the_server_rejects_bad_requests_clearly(toy_url):
    # a model it does not serve: a 4xx, reported at once (not retried)
    with pytest.raises(EndpointError, match=r"rejected the request for model 'gpt-4' \(HTTP 404: Model 'gpt-4' is not"):
        EndpointChatModel(toy_url, "gpt-4", retries=5, backoff=10.0).chat([user("hi")])
    request = urllib.request.Request(
        f"{toy_url}/chat/completions", data=json.dumps({"messages": []}).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert "non-empty list of messages" in json.load(caught.value)["error"]["message"]


def raw_post(url: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """POST ``body`` to the server's chat completions with exactly ``headers`` (no Content-Length added);
    the status and the JSON answer (a missing answer or a hang fails the test through its exception)."""
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    with closing(http.client.HTTPConnection(host, int(port), timeout=10)) as connection:
        connection.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())


def post_json(url: str, request: object) -> tuple[int, dict]:
    body = json.dumps(request).encode()
    return raw_post(url, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)


def assert_invalid(answer: tuple[int, dict], status: int, message: str) -> None:
    """An OpenAI-shaped error with this status whose one-sentence message matches ``message``."""
    code, payload = answer
    assert code == status, payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert re.fullmatch(message, payload["error"]["message"]), payload["error"]["message"]
    assert re.fullmatch(r"[A-Za-z][^\n]*\.", payload["error"]["message"])


DEEP = b"[" * 100_000
"""Nested past the JSON parser's recursion limit."""


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        pytest.param({}, b"", 400, r"The request needs a Content-Length header .*", id="no-length"),
        pytest.param({"Content-Length": "abc"}, b"{}", 400, r"Content-Length must be a non-negative .*", id="abc"),
        pytest.param({"Content-Length": "-5"}, b"{}", 400, r"Content-Length must be a non-negative .*", id="negative"),
        pytest.param({"Content-Length": "1e3"}, b"{}", 400, r"Content-Length must be a non-negative .*", id="1e3"),
        pytest.param(
            {"Content-Length": str(MAX_BODY + 1)}, b"", 413, rf"The request body is over {MAX_BODY} bytes\.", id="big"
        ),
        pytest.param({"Content-Length": "9" * 5000}, b"", 413, r"The request body is over .*", id="huge"),
        pytest.param({"Content-Length": "8"}, b"not json", 400, r"The request body is not JSON\.", id="text"),
        pytest.param({"Content-Length": "2"}, b"\xff\xfe", 400, r"The request body is not JSON\.", id="binary"),
        pytest.param({"Content-Length": str(len(DEEP))}, DEEP, 400, r"The request body is not JSON\.", id="deep"),
        pytest.param({"Content-Length": "2"}, b"[]", 400, r"The request body must be a JSON object\.", id="list"),
        pytest.param({"Content-Length": "4"}, b"null", 400, r"The request body must be a JSON object\.", id="null"),
    ],
)
def test_the_server_answers_a_malformed_body_with_400_or_413_not_a_hang(toy_url, headers, body, status, message):
    assert_invalid(raw_post(toy_url, headers, body), status, message)


def test_a_body_shorter_than_its_length_gets_400_and_the_server_stays_up(toy_url):
    # the client done sending after 2 of 100 bytes: an answer, not a wait
    host, port = toy_url.removeprefix("http://").removesuffix("/v1").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")
        sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert_invalid(
            (response.status, json.loads(response.read())), 400, r"The request body ended after 2 of its 100 bytes\."
        )
    # the server is still up and answers a good request
    status, payload = post_json(toy_url, {"messages": user(HARMFUL[0]), "max_tokens": 12})
    assert status == 200 and payload["choices"][0]["message"]["content"] == REFUSAL


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_tokens": 0}, r"max_tokens must be a positive integer, got 0\."),
        ({"max_tokens": -3}, r"max_tokens must be a positive integer, got -3\."),
        ({"max_tokens": 1.5}, r"max_tokens must be a positive integer, got 1\.5\."),
        ({"max_tokens": "8"}, r"max_tokens must be a positive integer, got '8'\."),
        ({"max_tokens": True}, r"max_tokens must be a positive integer, got True\."),
        ({"max_completion_tokens": 0, "max_tokens": 8}, r"max_completion_tokens must be a positive integer, got 0\."),
        ({"temperature": -0.1}, r"temperature must be a number between 0 and 2, got -0\.1\."),
        ({"temperature": 2.5}, r"temperature must be a number between 0 and 2, got 2\.5\."),
        ({"temperature": "hot"}, r"temperature must be a number between 0 and 2, got 'hot'\."),
        ({"temperature": float("nan")}, r"temperature must be a number between 0 and 2, got nan\."),
        ({"seed": 2**64}, r"seed must be a 64-bit integer, got 18446744073709551616\."),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else "message",
)
def test_the_server_refuses_bad_generation_settings_with_400(toy_url, settings, message):
    assert_invalid(post_json(toy_url, {"messages": user(HARMFUL[0]), **settings}), 400, message)


def test_the_server_applies_the_default_only_when_max_tokens_is_absent(toy, toy_url):
    conversation = user(HARMLESS[0])
    one = post_json(toy_url, {"messages": conversation, "max_tokens": 1})
    default = post_json(toy_url, {"messages": conversation, "max_tokens": None, "temperature": None})
    assert one[0] == default[0] == 200
    assert one[1]["choices"][0]["message"]["content"] == LocalChatModel(toy).chat([conversation], max_tokens=1)[0]
    assert default[1]["choices"][0]["message"]["content"] == COMPLIANCE


def test_an_endpoint_that_does_not_answer_fails_once_after_the_retries():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = EndpointChatModel(f"http://127.0.0.1:{port}/v1", "m", retries=2, timeout=2.0, backoff=0.01)
    start = time.perf_counter()
    with pytest.raises(EndpointError, match=rf"127\.0\.0\.1:{port}/v1 \(model 'm'\) gave no usable reply in 3 tries"):
        endpoint.chat([user("hi")])
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    "body",
    [b'{"junk": true}', b"not json at all", json.dumps({"choices": []}).encode()],
    ids=["no-choices", "not-json", "empty-choices"],
)
def test_a_malformed_response_is_retried_then_one_clear_error(body):
    with junk_server(body) as (url, requests):
        endpoint = EndpointChatModel(url, "m", retries=1, timeout=5.0, backoff=0.01)
        with pytest.raises(EndpointError, match=r"gave no usable reply in 2 tries \(last: malformed reply"):
            endpoint.chat([user("hi")])
    assert requests == ["/v1/chat/completions"] * 2


def test_load_chat_model_reads_endpoint_specs():
    endpoint = load_chat_model("openai:http://127.0.0.1:9/v1#some-model")
    assert isinstance(endpoint, EndpointChatModel) and endpoint.name == "some-model@http://127.0.0.1:9/v1"
    with pytest.raises(SettingError, match="needs a base URL and a model"):
        load_chat_model("openai:http://127.0.0.1:9/v1")


def test_serve_reports_a_bad_spec_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        serve_main([str(tmp_path / "nothing-here")])
    assert caught.value.code == 2
    assert re.fullmatch(r"python -m mechrefusal.serve: error: No model at .*nothing-here.*\n", capsys.readouterr().err)
