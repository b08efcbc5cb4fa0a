"""The streaming relay: event boundaries, keep-alives, usage capture and estimation, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import pytest

from aisix.hooks import Hook
from aisix.local.mock_upstream import serve_lifespan
from conftest import CHAT, ServerThread, chunked_frames, eventually, models_config, sse_events
from faultkit import RawClient

STREAM = {**CHAT, "stream": True}


class RecordingHook(Hook):
    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.calls: list = []

    def on_chunk(self, call, data):
        self.chunks.append(data)

    async def post_call(self, call):
        self.calls.append(call)


def chunk(content: str, **extra) -> str:
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None,
                                    "finish_reason": None}], **extra})


class RawUpstream:
    """Sends exactly the given byte pieces as an event stream, one ASGI message each; with a
    ``gate``, only once the test has set it (bounded: 10 s), after answering 200 at once."""

    def __init__(self, pieces: list[bytes], gate: threading.Event | None = None) -> None:
        self.pieces = pieces
        self.gate = gate

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(1000):
            if self.gate is None or self.gate.is_set():
                break
            await asyncio.sleep(0.01)
        for piece in self.pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def raw_gateway(start_gateway):
    servers = []

    def start(pieces: list[bytes], gate: threading.Event | None = None, hook: Hook | None = None):
        server = ServerThread(RawUpstream(pieces, gate)).start()
        servers.append(server)
        return start_gateway(config=models_config(server.url + "/v1"), hooks=[hook] if hook else [])

    yield start
    for server in servers:
        server.stop()


def test_sse_framing_crlf_comments_multiline_and_split_reads(raw_gateway):
    a, b = chunk("Hel"), chunk("lo")
    pieces = [
        b": upstream comment\r\n\r\n",
        b"data: " + a.encode()[:20],                       # an event split across reads
        a.encode()[20:] + b"\r\n\r\n",
        b"data: " + b.split(', "choices"')[0].encode() + b",\ndata:" + b'"choices"' + b.split('"choices"')[1].encode()
        + b"\n\n",  # multi-line data, split between JSON tokens
        b"event: ping\ndata: \n\n",                        # an event with empty data is dropped
        b"data: [DONE]\n\n",
    ]
    gw = raw_gateway(pieces)
    with gw.client(gw.key()) as client:
        body = client.post("/v1/chat/completions", json=STREAM).text
    events = sse_events(body)
    assert events[0] == a
    assert "\n" in events[1], "the multi-line event stays multi-line, each line with its own data: prefix"
    # Multi-line data is joined with a newline, as the SSE spec says; it stays valid JSON.
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "lo"
    assert events[-1] == "[DONE]"
    assert ": upstream comment" not in body
    # Each event leaves as one well-formed SSE event.
    assert body.endswith("data: [DONE]\n\n")


def test_each_upstream_event_is_its_own_write(raw_gateway):
    """Two events in one upstream read still leave the gateway as two writes.

    Read at the HTTP level over a plain socket: the gateway's server sends each ASGI body
    message as one chunk of the chunked transfer encoding, so the frames are its writes
    (an HTTP client library would hand back its reads, which may merge or split them).
    """
    events = [chunk("a"), chunk("b"), chunk("c")]
    pieces = [("data: " + events[0] + "\n\ndata: " + events[1] + "\n\n").encode(),  # two events, one read
              ("data: " + events[2] + "\n\ndata: [DONE]\n\n").encode()]
    gw = raw_gateway(pieces)
    client = RawClient(gw.url, "/v1/chat/completions", STREAM, gw.key())
    raw = client.read_until(lambda got: got.endswith(b"\r\n0\r\n\r\n"), timeout=30)
    client.hang_up()
    head, frames = chunked_frames(bytes(raw))
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert frames == [f"data: {e}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def test_keepalive_comments_while_the_upstream_is_silent_after_its_status(raw_gateway):
    """Once the upstream has answered 200, silences are filled with SSE comments; the events follow intact.
    The upstream stays silent until the client has had a keep-alive (or 10 s): an order, not a timing."""
    gate = threading.Event()
    pieces = [b": hello\n\n", ("data: " + chunk("a") + "\n\n").encode(), b"data: [DONE]\n\n"]
    gw = raw_gateway(pieces, gate=gate)
    gw.gateway.settings = dataclasses.replace(gw.gateway.settings, keepalive_seconds=0.05)
    with gw.client(gw.key()) as client:
        with client.stream("POST", "/v1/chat/completions", json=STREAM) as r:
            assert r.status_code == 200
            body = b""
            for piece in r.iter_raw():
                body += piece
                if body.startswith(b": keep-alive\n\n"):
                    gate.set()
    assert body.startswith(b": keep-alive\n\n"), body[:100]
    assert sse_events(body.decode()) == [chunk("a"), "[DONE]"]


def test_no_byte_reaches_the_client_before_the_upstream_status(start_gateway):
    """An upstream that refuses after a long silence is still a clean HTTP error, Retry-After kept."""
    gw = start_gateway(keepalive_seconds=0.05)
    slow_429 = {**STREAM, "mock": {"first_byte_delay": 0.5, "status": 429, "message": "slow down"}}
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", json=slow_429)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["message"] == "slow down"


def test_usage_from_the_final_chunk_is_charged_to_tpm(start_gateway):
    hook = RecordingHook()
    gw = start_gateway(hooks=[hook])
    secret = gw.key(tpm=100_000)
    with gw.client(secret) as client:
        client.post("/v1/chat/completions", json=STREAM)
    call = eventually(lambda: hook.calls)[-1]
    assert call.usage_estimated is False
    assert call.usage.completion_tokens == 12
    assert eventually(lambda: gw.store.read_window(gw.key_id(secret)).tokens) == call.usage.total_tokens
    assert not any('"usage":{' in c.replace(" ", "") for c in hook.chunks), "hidden usage chunk not seen by hooks"


def test_missing_usage_is_estimated_and_charged(start_gateway):
    hook = RecordingHook()
    gw = start_gateway(hooks=[hook])
    secret = gw.key(tpm=100_000)
    with gw.client(secret) as client:
        body = client.post("/v1/chat/completions", json={**STREAM, "mock": {"usage": False}}).text
    assert sse_events(body)[-1] == "[DONE]"
    call = eventually(lambda: hook.calls)[-1]
    assert call.usage_estimated is True
    assert call.usage.completion_tokens > 0 and call.usage.prompt_tokens > 0
    assert eventually(lambda: gw.store.read_window(gw.key_id(secret)).tokens) == call.usage.total_tokens


def test_strict_upstream_refusing_stream_options_is_retried_once_without(start_gateway, upstream):
    hook = RecordingHook()
    gw = start_gateway(hooks=[hook])
    request = {**STREAM, "mock": {"reject_stream_options": True}, "marker": "strict"}
    with gw.client(gw.key()) as client:
        first = client.post("/v1/chat/completions", json=request)
        second = client.post("/v1/chat/completions", json=request)
    assert first.status_code == second.status_code == 200
    assert sse_events(first.text)[-1] == "[DONE]"
    sent = [r["body"] for r in upstream.requests() if r["body"].get("marker") == "strict"]
    assert ["stream_options" in b for b in sent] == [True, False, False], "refused once, then remembered"
    assert eventually(lambda: hook.calls)[-1].usage_estimated is True


def test_mid_stream_failure_is_an_error_event_without_done_and_is_charged(start_gateway):
    hook = RecordingHook()
    gw = start_gateway(hooks=[hook])
    secret = gw.key(tpm=100_000)
    with gw.client(secret) as client:
        response = client.post("/v1/chat/completions", json={**STREAM, "mock": {"fail_after": 4}})
    events = sse_events(response.text)
    assert response.status_code == 200
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
    call = eventually(lambda: hook.calls)[-1]
    assert call.error is not None and call.usage_estimated
    assert eventually(lambda: gw.store.read_window(gw.key_id(secret)).tokens) == call.usage.total_tokens > 0


def test_upstream_closing_without_done_is_an_error_not_a_clean_end(start_gateway):
    gw = start_gateway()
    with gw.client(gw.key()) as client:
        events = sse_events(client.post("/v1/chat/completions", json={**STREAM, "mock": {"no_done": True}}).text)
    assert "[DONE]" not in events
    assert "closed the stream" in json.loads(events[-1])["error"]["message"]


def test_read_timeout_mid_stream_is_an_error_event(start_gateway, upstream):
    config = models_config(upstream.base_url)
    config["models"][0]["timeout"] = 0.4
    gw = start_gateway(config=config)
    with gw.client(gw.key()) as client:
        events = sse_events(client.post("/v1/chat/completions", json={**STREAM, "mock": {"delay": 1.0}}).text)
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"


def test_non_sse_answer_to_a_stream_is_502(start_gateway):
    gw = start_gateway()
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", json={**STREAM, "mock": {"not_sse": True}})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


def test_hooks_see_every_relayed_chunk(start_gateway):
    hook = RecordingHook()
    gw = start_gateway(hooks=[hook])
    with gw.client(gw.key()) as client:
        events = sse_events(client.post("/v1/chat/completions", json=STREAM).text)
    assert hook.chunks == events[:-1]
