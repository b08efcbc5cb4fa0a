"""A mock OpenAI-compatible upstream, for local runs, tests and benchmarks. NOT a model.

It answers ``POST /v1/chat/completions`` (streamed and not) in OpenAI's
exact response format, with canned text, and ``POST /v1/embeddings`` with
deterministic vectors. A request may steer it through an
extra ``mock`` object in its body (the gateway passes unknown fields
through untouched)::

    {"mock": {"words": 50, "delay": 0.03, "usage": false, "fail_after": 3,
              "status": 500, "reject_stream_options": true, "first_byte_delay": 2,
              "not_sse": true, "no_done": true, "malformed_after": 2, "huge_chunk": 1000000}}

Fault modes, for the fault tests (docs/faults.md):

``id``
    Record this call's life under this name in ``MockUpstream.calls`` (and at
    ``GET /_mock/calls/<id>``): when it arrived, when its first byte left,
    when the gateway hung up on it (``disconnected``), when it finished, how
    many bytes and events it sent. With an ``id`` the mock watches for the
    gateway going away and stops producing, as a real upstream does.
``first_byte_delay``
    Seconds before the response starts (a time-out before the first byte).
``stall_after``
    Stream this many words, then fall silent (for ``stall`` seconds, default 60).
``fail_after``
    Stream this many words, then drop the connection (no final chunk).
``malformed_after`` / ``malformed``
    Before word n, send an event whose data is ``malformed`` (default ``{not json``).
``error_event_after``
    After n words, send ``data: {"error": {...}}`` (with ``message``) and end.
``huge_chunk`` / ``chunk_bytes``
    The first word's content is ``huge_chunk`` characters long; with
    ``chunk_bytes`` every word's is.
``not_sse``
    Answer a streamed request with a JSON completion (``"text"``: with plain text).
``status`` / ``message``
    Refuse with this HTTP status and an OpenAI error (429 carries ``Retry-After: 7``).
``headers``
    Extra response headers, e.g. hop-by-hop ones, to check what the gateway forwards.

``#mock key=value ...`` anywhere in the request's text does the same for
clients that cannot add body fields (a translated call): ``words``, ``delay``,
``fail_after``, ``status``, ``usage=0`` and ``tool=NAME`` (answer with a call
to NAME with ``{"city": "Paris"}``, or ``args=<base64url JSON>``, its arguments streamed
in fragments). A conversation ending with a ``tool`` message is answered with text
quoting it (no tool call), so a coding agent's tool round trip ends.

``GET /_mock/requests`` returns the requests it received (headers and
bodies), so tests can see exactly what the gateway sent upstream.

A raw ASGI app, so that it costs as little CPU as possible next to the
gateway in benchmarks; run it with ``python -m aisix.local.mock_upstream``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import struct
import time
import uuid
from typing import Any

from .mocks import after_tool_result, chat_tool_fragments, chat_tool_result, echo_words, embedding_vector, read_body

STORY = (
    "Once upon a time, a brave little API gateway stood between a crowd of eager clients "
    "and a distant, powerful model. Every request that came to its door was checked: the "
    "key was read, the model was named, the limits were counted. Then the gateway opened a "
    "stream to the model and passed each word along the moment it arrived, never holding "
    "anything back, never letting a cut-off answer pass for a whole one. When the story was "
    "told, it counted the tokens, wrote them down, and waited for the next knock at the door."
).split(" ")


DIRECTIVE = re.compile(rb"#mock((?:[ \t]+[a-z_]+=[^\s\"\\]+)+)")
_DIRECTIVE_CASTS: dict[str, Any] = {"words": int, "delay": float, "fail_after": int, "status": int,
                                    "usage": lambda v: v not in ("0", "false"), "tool": str, "args": str}
TOOL_FRAGMENTS = ('{"city"', ': "Par', 'is"}')


def mock_directive(raw: bytes) -> dict[str, Any]:
    """The ``#mock key=value ...`` directive in a request body, as ``mock`` options (unknown keys ignored)."""
    match = DIRECTIVE.search(raw) if b"#mock" in raw else None
    if not match:
        return {}
    options: dict[str, Any] = {}
    for pair in match.group(1).decode().split():
        key, _, value = pair.partition("=")
        if key in _DIRECTIVE_CASTS:
            options[key] = _DIRECTIVE_CASTS[key](value)
    return options


class CallRecord:
    """What happened to one call that carried ``mock.id`` (times are ``time.monotonic()``)."""

    __slots__ = ("received", "first_byte", "disconnected", "finished", "sent_bytes", "events", "gone")

    def __init__(self) -> None:
        self.received = time.monotonic()
        self.first_byte: float | None = None
        self.disconnected: float | None = None
        self.finished: float | None = None
        self.sent_bytes = 0
        self.events = 0
        self.gone = asyncio.Event()

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "gone"}


class MockUpstream:
    def __init__(self, delay: float = 0.0, words: int = 20) -> None:
        self.default_delay = delay
        self.default_words = words
        self.requests: list[dict[str, Any]] = []
        self.calls: dict[str, CallRecord] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/_mock/requests" and method == "GET":
            await _send_json(send, 200, self.requests)
            return
        if path == "/_mock/requests" and method == "DELETE":
            self.requests.clear()
            self.calls.clear()
            await _send_json(send, 200, {})
            return
        if path.startswith("/_mock/calls/") and method == "GET":
            record = self.calls.get(path[len("/_mock/calls/"):])
            await _send_json(send, 200 if record else 404, record.as_dict() if record else {})
            return
        if path.endswith("/chat/completions") and method == "POST":
            body = await read_body(receive)
            await self.chat(scope, body, receive, send)
            return
        if path.endswith("/embeddings") and method == "POST":
            await self.embeddings(scope, await read_body(receive), send)
            return
        await _send_json(send, 404, _error("not found", "invalid_request_error"))

    async def embeddings(self, scope: dict[str, Any], raw: bytes, send: Any) -> None:
        """``POST /v1/embeddings``: a deterministic vector per input (base64 float32 when asked, as OpenAI
        encodes them), usage counted from the text; ``#mock status=`` and ``usage=0`` apply."""
        body = json.loads(raw)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if len(self.requests) < 1000:
            self.requests.append({"headers": headers, "body": body})
        options = mock_directive(raw)
        if options.get("status"):
            status = options["status"]
            await _send_json(send, status, _error(f"mock failure {status}", "mock_error", code="mock"),
                             [(b"retry-after", b"7")] if status == 429 else [])
            return
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []]
        size = int(body.get("dimensions") or 8)
        data = []
        for index, text in enumerate(texts):
            vector = embedding_vector(text, size)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        answer: dict[str, Any] = {"object": "list", "model": body.get("model", "mock"), "data": data}
        if options.get("usage", True):
            tokens = sum(len(t) for t in texts) // 4 + len(texts)
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        await _send_json(send, 200, answer)

    async def chat(self, scope: dict[str, Any], raw: bytes, receive: Any, send: Any) -> None:
        body = json.loads(raw)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if len(self.requests) < 1000:
            self.requests.append({"headers": headers, "body": body})
        options = body.get("mock")
        if not isinstance(options, dict):
            options = {}
        directive = mock_directive(raw)
        if directive:
            options = {**directive, **options}
        options = after_tool_result(options, chat_tool_result(body.get("messages")))
        record: CallRecord | None = None
        watcher: asyncio.Task[None] | None = None
        if isinstance(options.get("id"), str):
            record = self.calls[options["id"]] = CallRecord()
            watcher = asyncio.get_running_loop().create_task(_watch(receive, record))
            send = _counting(send, record)
        try:
            await self._answer(body, options, record, send)
        finally:
            if record is not None:
                record.finished = time.monotonic()
            if watcher is not None:
                watcher.cancel()

    async def _answer(self, body: dict[str, Any], options: dict[str, Any], record: CallRecord | None,
                      send: Any) -> None:
        extra_headers = [(str(k).encode(), str(v).encode()) for k, v in (options.get("headers") or {}).items()]
        if options.get("first_byte_delay"):
            if await _sleep(float(options["first_byte_delay"]), record):
                return
        status = options.get("status")
        if status:
            extra = [(b"retry-after", b"7")] if status == 429 else []
            message = options.get("message", f"mock failure {status}")
            await _send_json(send, status, _error(message, "mock_error", code="mock"), extra + extra_headers)
            return
        stream = body.get("stream") is True
        if stream and "stream_options" in body and options.get("reject_stream_options"):
            await _send_json(
                send, 400,
                _error("Unrecognized request argument supplied: stream_options", "invalid_request_error",
                       param="stream_options"),
            )
            return
        count = int(options.get("words", self.default_words))
        words = echo_words(options["echo"]) if "echo" in options else (STORY * (1 + count // len(STORY)))[:count]
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 4 + 1
        model = body.get("model", "mock")
        if options.get("not_sse") == "text":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"), *extra_headers]})
            await send({"type": "http.response.body", "body": " ".join(words).encode()})
            return
        if not stream or options.get("not_sse"):
            answer = _completion(model, " ".join(words), prompt_tokens, len(words))
            if options.get("tool"):
                answer["choices"][0]["message"].update(content=None, tool_calls=[{
                    "id": "call_mock" + uuid.uuid4().hex[:16], "type": "function",
                    "function": {"name": str(options["tool"]),
                                 "arguments": "".join(chat_tool_fragments(options, TOOL_FRAGMENTS))}}])
                answer["choices"][0]["finish_reason"] = "tool_calls"
            await _send_json(send, 200, answer, extra_headers)
            return
        await self.stream(body, options, words, prompt_tokens, model, send, record, extra_headers)

    async def stream(
        self, body: dict[str, Any], options: dict[str, Any], words: list[str],
        prompt_tokens: int, model: str, send: Any, record: CallRecord | None = None,
        extra_headers: list[tuple[bytes, bytes]] = [],
    ) -> None:
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), *extra_headers],
        })
        delay = float(options.get("delay", self.default_delay))
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
        send_usage = include_usage and options.get("usage", True)
        cid, created = "chatcmpl-mock" + uuid.uuid4().hex[:20], int(time.time())
        fail_after = options.get("fail_after")
        stall_after = options.get("stall_after")
        malformed_after = options.get("malformed_after")
        error_after = options.get("error_event_after")
        chunk_bytes = int(options.get("chunk_bytes") or 0)

        async def event(choices: list[Any], usage: Any = ...) -> None:
            chunk: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_mock", "choices": choices,
            }
            if include_usage:
                chunk["usage"] = None if usage is ... else usage
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True})

        await event([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}])
        if options.get("tool"):
            fragments = chat_tool_fragments(options, TOOL_FRAGMENTS)
            await self._tool_call(str(options["tool"]), fragments, event, delay, fail_after, record)
            if send_usage:
                await event([], {"prompt_tokens": prompt_tokens, "completion_tokens": len(TOOL_FRAGMENTS),
                                 "total_tokens": prompt_tokens + len(TOOL_FRAGMENTS)})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        for index, word in enumerate(words):
            if record is not None and record.disconnected is not None:
                return  # the gateway hung up: stop generating
            if fail_after is not None and index >= fail_after:
                raise RuntimeError("mock upstream failing mid-stream, as asked")
            if stall_after is not None and index >= stall_after:
                await _sleep(float(options.get("stall", 60)), record)
                return
            if error_after is not None and index >= error_after:
                error = _error(options.get("message", "mock upstream error mid-stream"), "server_error")
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(error).encode() + b"\n\n",
                            "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if malformed_after is not None and index == malformed_after:
                bad = str(options.get("malformed", "{not json")).encode()
                await send({"type": "http.response.body", "body": b"data: " + bad + b"\n\n", "more_body": True})
            if delay and await _sleep(delay, record):
                return
            text = word if index == 0 else " " + word
            if chunk_bytes:
                text = (text * (1 + chunk_bytes // len(text)))[:chunk_bytes]
            elif options.get("huge_chunk") and index == 0:
                text = "x" * int(options["huge_chunk"])
            await event([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}])
        await event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if send_usage:
            await event([], {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                             "total_tokens": prompt_tokens + len(words)})
        if not options.get("no_done"):
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


    @staticmethod
    async def _tool_call(name: str, pieces: tuple[str, ...], event: Any, delay: float, fail_after: Any,
                         record: CallRecord | None) -> None:
        """A tool call in OpenAI's fragments: id and name first, then the arguments in pieces."""
        fragments = [{"index": 0, "id": "call_mock" + uuid.uuid4().hex[:16], "type": "function",
                      "function": {"name": name, "arguments": ""}}]
        fragments += [{"index": 0, "function": {"arguments": piece}} for piece in pieces]
        for index, fragment in enumerate(fragments):
            if fail_after is not None and index >= fail_after:
                raise RuntimeError("mock upstream failing mid-stream, as asked")
            if delay and await _sleep(delay, record):
                return
            await event([{"index": 0, "delta": {"tool_calls": [fragment]}, "logprobs": None, "finish_reason": None}])
        await event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}])


async def _watch(receive: Any, record: CallRecord) -> None:
    """Note when the gateway goes away (the body has been read: the next message is the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            record.disconnected = time.monotonic()
            record.gone.set()
            return


async def _sleep(seconds: float, record: CallRecord | None) -> bool:
    """Sleep, or stop early when the gateway hangs up; True if it did."""
    if record is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(record.gone.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


def _counting(send: Any, record: CallRecord) -> Any:
    async def counted(message: dict[str, Any]) -> None:
        await send(message)
        if message["type"] == "http.response.body" and message.get("body"):
            if record.first_byte is None:
                record.first_byte = time.monotonic()
            record.sent_bytes += len(message["body"])
            record.events += 1

    return counted


def _completion(model: str, text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock" + uuid.uuid4().hex[:20],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan scope for an app with nothing to start or stop (mocks, test apps)."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


def _error(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def _send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="Mock OpenAI-compatible upstream (canned text, not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3900)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--words", type=int, default=20, help="tokens per answer")
    args = parser.parse_args()
    import uvicorn

    print(f"MOCK upstream on http://{args.host}:{args.port}/v1 — canned answers, not a real model", flush=True)
    uvicorn.run(MockUpstream(args.delay, args.words), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
