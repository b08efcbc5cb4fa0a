"""Past its capacity (AISIX_MAX_OPEN_CALLS) a process answers new calls at once: a 503 with
Retry-After in the caller's dialect, instead of leaving them unanswered in the accept queue.

Streams are held open by an upstream that waits for the test to release it (no sleeps); "at
once" is shown by the refusal arriving while every admitted call is still held.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest

from aisix.config import ConfigError, Settings
from aisix.local.mock_upstream import serve_lifespan
from aisix.local.mocks import read_body
from conftest import CHAT, RunningGateway, ServerThread, eventually, models_config

ANTHROPIC = {"model": "my-gpt4-mini", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


class HeldUpstream:
    """An OpenAI-compatible upstream that answers each call's first chunk (or nothing, for a
    non-streamed call) and then holds it until `release` is set or the gateway hangs up."""

    def __init__(self) -> None:
        self.url = ""
        self.release = threading.Event()
        self.entered = 0
        self.hung_up = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = await read_body(receive)
        stream = json.loads(body).get("stream", False)
        self.entered += 1
        if stream:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": _chunk({"role": "assistant", "content": "held "}),
                        "more_body": True})
        released = asyncio.ensure_future(asyncio.to_thread(self.release.wait, 60))
        gone = asyncio.ensure_future(receive())  # the next message is the disconnect
        await asyncio.wait((released, gone), return_when=asyncio.FIRST_COMPLETED)
        if gone.done():
            self.hung_up += 1
            return
        gone.cancel()
        if stream:
            await send({"type": "http.response.body", "body": _chunk({}, "stop"), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        else:
            answer = {"id": "chatcmpl-held", "object": "chat.completion", "created": 1700000000, "model": "held",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "done"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "chatcmpl-held", "object": "chat.completion.chunk", "created": 1700000000, "model": "held",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


@pytest.fixture
def held() -> Iterator[HeldUpstream]:
    upstream = HeldUpstream()
    server = ServerThread(upstream).start()
    upstream.url = server.url
    yield upstream
    upstream.release.set()
    server.stop()


@pytest.fixture
def gw(start_gateway: Callable[..., RunningGateway], held: HeldUpstream) -> RunningGateway:
    return start_gateway(config=models_config(held.url + "/v1"), max_open_calls=2)


def capacity(gw: RunningGateway) -> Any:
    return gw.server.server.config.app.state.capacity


def open_stream(gw: RunningGateway, secret: str, pool: ThreadPoolExecutor) -> tuple[socket.socket, Future[bytes]]:
    """A streamed call on a raw socket, read to its end in ``pool``; returned once its first chunk is in."""
    body = json.dumps({**CHAT, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.server.port), timeout=30)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\n"
                 f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    first = sock.recv(65536)
    while b"held" not in first:
        more = sock.recv(65536)
        assert more, first
        first += more
    assert first.startswith(b"HTTP/1.1 200"), first

    def rest() -> bytes:
        data = first
        while b"[DONE]" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        return data

    return sock, pool.submit(rest)


def assert_refused_in_each_dialect(gw: RunningGateway, secret: str) -> None:
    with gw.client(secret, timeout=10) as client:  # a hang guard: a queued call would hit it
        openai = client.post("/v1/chat/completions", json=CHAT)
        assert openai.status_code == 503
        assert int(openai.headers["retry-after"]) >= 1
        error = openai.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "server_error" and error["code"] == "overloaded" and error["message"]
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert streamed.status_code == 503 and streamed.headers["retry-after"]
        anthropic = client.post("/v1/messages", json=ANTHROPIC,
                                headers={"x-api-key": secret, "anthropic-version": "2023-06-01"})
        assert anthropic.status_code == 503 and anthropic.headers["retry-after"]
        body = anthropic.json()
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error" and body["error"]["message"]
        responses = client.post("/v1/responses", json={"model": "my-gpt4-mini", "input": "hi"})
        assert responses.status_code == 503 and set(responses.json()["error"]) == {"message", "type", "param", "code"}
        assert client.get("/health").status_code == 200  # a full process still says it is alive


def test_third_call_is_refused_at_once_then_capacity_comes_back(gw: RunningGateway, held: HeldUpstream) -> None:
    secret = gw.key()
    with ThreadPoolExecutor(4) as pool:
        streams = [open_stream(gw, secret, pool) for _ in range(2)]
        assert_refused_in_each_dialect(gw, secret)
        assert held.entered == 2  # the refused calls never reached the upstream
        assert not any(done.done() for _, done in streams)  # refused while both streams were still held

        held.release.set()
        for sock, done in streams:
            assert b"data: [DONE]" in done.result(timeout=30)
            sock.close()
        assert eventually(lambda: capacity(gw).open == 0)
        with gw.client(secret) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

        # Both slots came back, no more: two streams are admitted again and a third is refused.
        held.release.clear()
        streams = [open_stream(gw, secret, pool) for _ in range(2)]
        with gw.client(secret, timeout=10) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
        held.release.set()
        for sock, done in streams:
            done.result(timeout=30)
            sock.close()


def test_cancelled_calls_free_their_slots(gw: RunningGateway, held: HeldUpstream) -> None:
    secret = gw.key()
    with ThreadPoolExecutor(4) as pool:
        # A stream whose client leaves, and a non-streamed call whose client leaves while the upstream holds it.
        sock, _ = open_stream(gw, secret, pool)
        plain = socket.create_connection(("127.0.0.1", gw.server.port), timeout=30)
        body = json.dumps(CHAT).encode()
        plain.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\n"
                      f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        assert eventually(lambda: held.entered == 2)
        with gw.client(secret, timeout=10) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
        sock.close()
        plain.close()
        assert eventually(lambda: held.hung_up == 2), "the gateway did not cancel the upstream calls"
        assert eventually(lambda: capacity(gw).open == 0), "a cancelled call kept its slot"

        streams = [open_stream(gw, secret, pool) for _ in range(2)]
        with gw.client(secret, timeout=10) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 503
        held.release.set()
        for s, done in streams:
            done.result(timeout=30)
            s.close()


def test_a_call_that_fails_frees_its_slot(start_gateway: Callable[..., RunningGateway]) -> None:
    """An upstream that cannot be reached: each call fails (502), and the slots never run out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # bound, never listening: connection refused
        gw = start_gateway(config=models_config(dead), max_open_calls=1)
        secret = gw.key()
        with gw.client(secret) as client:
            for body in (CHAT, {**CHAT, "stream": True}, CHAT, {**CHAT, "stream": True}):
                assert client.post("/v1/chat/completions", json=body).status_code == 502
                assert eventually(lambda: capacity(gw).open == 0), "a failed call kept its slot"



def test_setting() -> None:
    assert Settings.from_env({}).max_open_calls > 0
    assert Settings.from_env({"AISIX_MAX_OPEN_CALLS": "0"}).max_open_calls == 0
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f"}).max_open_calls == 0  # one call at a time there
    with pytest.raises(ConfigError, match="AISIX_MAX_OPEN_CALLS"):
        Settings.from_env({"AISIX_MAX_OPEN_CALLS": "-1"})
    with pytest.raises(ConfigError, match="AISIX_MAX_OPEN_CALLS"):
        Settings.from_env({"AISIX_MAX_OPEN_CALLS": "many"})


def test_no_limit_when_zero(start_gateway: Callable[..., RunningGateway], held: HeldUpstream) -> None:
    gw = start_gateway(config=models_config(held.url + "/v1"), max_open_calls=0)
    secret = gw.key()
    with ThreadPoolExecutor(4) as pool:
        streams = [open_stream(gw, secret, pool) for _ in range(3)]
        held.release.set()
        for sock, done in streams:
            assert b"data: [DONE]" in done.result(timeout=30)
            sock.close()


def test_guard_gives_the_slot_back_when_the_call_raises_or_is_cancelled() -> None:
    """The count is given back in a finally: a task cancelled by the server (shutdown) or an
    exception out of the app never leaks a slot."""
    from aisix.overload import Capacity, OverloadGuard

    async def main() -> None:
        capacity = Capacity(1)
        entered = asyncio.Event()

        async def hangs(scope: Any, receive: Any, send: Any) -> None:
            entered.set()
            await asyncio.Event().wait()

        async def raises(scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("boom")

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
        task = asyncio.ensure_future(OverloadGuard(hangs, capacity, lambda s, e: None)(scope, None, None))
        await entered.wait()
        assert capacity.open == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert capacity.open == 0
        with pytest.raises(RuntimeError):
            await OverloadGuard(raises, capacity, lambda s, e: None)(scope, None, None)
        assert capacity.open == 0

    asyncio.run(main())
