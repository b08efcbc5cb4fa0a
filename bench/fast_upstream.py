"""A cheap OpenAI-compatible upstream for the benchmark: raw asyncio, HTTP/1.1 keep-alive.

``POST /v1/chat/completions`` (any path ending in ``/chat/completions``) answers in
OpenAI's exact format: a ``chat.completion`` object, or with ``"stream": true`` a
``text/event-stream`` of ``chat.completion.chunk`` events (the role chunk, N
content chunks, the ``finish_reason`` chunk, with ``stream_options.include_usage``
``"usage": null`` on each and a final ``"choices": []`` usage chunk, then
``data: [DONE]``), sent with chunked transfer encoding, one HTTP chunk per event.

The request steers it through an extra ``bench`` object in its body, which the
gateway passes through untouched::

    {"bench": {"chunks": 100, "pace_ms": 1.0, "words": 20}}

A translated request (an Anthropic or Responses client in front of this upstream)
loses that object on the way, so without it the same options are read from a
directive anywhere in the request's text, found with one regex over the raw body::

    {"messages": [{"role": "user", "content": "Say hello #bench chunks=100 pace_ms=1 words=20"}]}

``pace_ms`` 0 (default) sends the events back to back ("burst": each its own
write, the kernel coalesces them); ``pace_ms`` > 0 sleeps between events
("paced": one event per upstream read, as real token streams arrive).

Every content chunk carries its send time: its text is ``" <seq>@<CLOCK_MONOTONIC ns>"``,
so a client on the same machine can tell how long each chunk took to reach it.

Built on asyncio's Protocol API (uvloop when installed), without an ASGI server,
so that its own CPU per request or chunk is small next to the gateway's and
does not limit the run. ``GET /health`` answers 200. Run it with
``python -m bench.fast_upstream --port 3901``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
import uuid
from typing import Any

WORDS = (
    "Once upon a time a brave little gateway stood between eager clients and a distant model "
    "and passed each word along the moment it arrived"
).split()


def completion_body(model: str, words: int, prompt_tokens: int) -> bytes:
    text = " ".join((WORDS * (1 + words // len(WORDS)))[:words])
    return json.dumps(
        {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": words,
                "total_tokens": prompt_tokens + words,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        },
        separators=(",", ":"),
    ).encode()


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class StreamTemplate:
    """Pre-rendered pieces of one stream's events, so each event costs a few byte joins."""

    def __init__(self, model: str, include_usage: bool) -> None:
        head = (
            '{"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            '"service_tier":"default","system_fingerprint":"fp_bench","choices":'
            % (uuid.uuid4().hex[:24], int(time.time()), json.dumps(model))
        ).encode()
        tail = b',"usage":null}' if include_usage else b"}"
        self.role = b"data: " + head + (
            b'[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}]'
        ) + tail + b"\n\n"
        self.content_head = b"data: " + head + b'[{"index":0,"delta":{"content":"'
        self.content_tail = b'"},"logprobs":null,"finish_reason":null}]' + tail + b"\n\n"
        self.stop = b"data: " + head + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]' + tail + b"\n\n"
        self.head = head

    def content(self, seq: int) -> bytes:
        return self.content_head + b" %d@%d" % (seq, time.monotonic_ns()) + self.content_tail

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = (
            b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
            b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
            b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
            b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}'
            % (prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
        )
        return b"data: " + self.head + b'[],"usage":' + usage + b"}\n\n"


def directive(raw: bytes) -> dict[str, str]:
    """The ``#bench key=value ...`` options in a raw request body; {} when it has none."""
    match = DIRECTIVE.search(raw) if b"#bench" in raw else None
    if match is None:
        return {}
    return dict(pair.split("=", 1) for pair in match.group(1).decode().split())  # type: ignore[misc]


DIRECTIVE = re.compile(rb"#bench((?:[ \t]+[a-z_]+=[0-9.]+)+)")
DONE = b"data: [DONE]\n\n"
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = b""
        self.busy = False
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end == -1:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = lines[0].split(" ")[:2]
            self.handle(method, path, body)

    def respond(self, status: str, body: bytes, content_type: bytes = b"application/json") -> None:
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), content_type, len(body), body)
        )

    def handle(self, method: str, path: str, raw: bytes) -> None:
        if method == "GET":
            self.respond("200 OK", b'{"status":"ok"}')
            return
        if not path.endswith("/chat/completions"):
            self.respond("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}')
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.respond("400 Bad Request", b'{"error":{"message":"bad json","type":"invalid_request_error","param":null,"code":null}}')
            return
        options = body.get("bench")
        if options is None:  # translated: the directive in the text is what survives
            options = directive(raw)
        model = str(body.get("model", "bench"))
        prompt_tokens = 8 + sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        if body.get("stream") is not True:
            self.respond("200 OK", completion_body(model, int(options.get("words", 20)), prompt_tokens))
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = int(options.get("chunks", 100))
        pace = float(options.get("pace_ms", 0)) / 1000
        template = StreamTemplate(model, include_usage)
        write = self.transport.write
        write(SSE_HEAD)
        write(_chunked(template.role))
        if pace <= 0:
            for seq in range(chunks):
                write(_chunked(template.content(seq)))
            self._finish(template, include_usage, prompt_tokens, chunks)
            return
        self.busy = True
        asyncio.ensure_future(self._paced(template, include_usage, prompt_tokens, chunks, pace))

    def _finish(self, template: StreamTemplate, include_usage: bool, prompt_tokens: int, chunks: int) -> None:
        write = self.transport.write
        write(_chunked(template.stop))
        if include_usage:
            write(_chunked(template.usage(prompt_tokens, chunks)))
        write(_chunked(DONE) + b"0\r\n\r\n")

    async def _paced(self, template: StreamTemplate, include_usage: bool, prompt_tokens: int, chunks: int, pace: float) -> None:
        write = self.transport.write
        for seq in range(chunks):
            await asyncio.sleep(pace)
            if self.closed:
                return
            write(_chunked(template.content(seq)))
        # The closing events are paced too, so that every event is its own upstream read.
        tail = [template.stop] + ([template.usage(prompt_tokens, chunks)] if include_usage else []) + [DONE]
        for event in tail:
            await asyncio.sleep(pace)
            if self.closed:
                return
            write(_chunked(event) + (b"0\r\n\r\n" if event is DONE else b""))
        self.busy = False
        self._next()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096, reuse_address=True)
    print(f"fast upstream on http://{host}:{port}/v1 (pid {os.getpid()})", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3901)
    args = parser.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
