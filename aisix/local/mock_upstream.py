"""A mock OpenAI-compatible upstream, for local runs, tests and benchmarks. NOT a model.

It answers ``POST /v1/chat/completions`` (streamed and not) in OpenAI's
exact response format, with canned text. A request may steer it through an
extra ``mock`` object in its body (the gateway passes unknown fields
through untouched)::

    {"mock": {"words": 50, "delay": 0.03, "usage": false, "fail_after": 3,
              "status": 500, "reject_stream_options": true, "first_byte_delay": 2,
              "not_sse": true, "no_done": true, "malformed_after": 2, "huge_chunk": 1000000}}

``GET /_mock/requests`` returns the requests it received (headers and
bodies), so tests can see exactly what the gateway sent upstream.

A raw ASGI app, so that it costs as little CPU as possible next to the
gateway in benchmarks; run it with ``python -m aisix.local.mock_upstream``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

STORY = (
    "Once upon a time, a brave little API gateway stood between a crowd of eager clients "
    "and a distant, powerful model. Every request that came to its door was checked: the "
    "key was read, the model was named, the limits were counted. Then the gateway opened a "
    "stream to the model and passed each word along the moment it arrived, never holding "
    "anything back, never letting a cut-off answer pass for a whole one. When the story was "
    "told, it counted the tokens, wrote them down, and waited for the next knock at the door."
).split(" ")


class MockUpstream:
    def __init__(self, delay: float = 0.0, words: int = 20) -> None:
        self.default_delay = delay
        self.default_words = words
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path, method = scope["path"], scope["method"]
        if path == "/_mock/requests" and method == "GET":
            await _send_json(send, 200, self.requests)
            return
        if path == "/_mock/requests" and method == "DELETE":
            self.requests.clear()
            await _send_json(send, 200, {})
            return
        if path.endswith("/chat/completions") and method == "POST":
            body = await _read_body(receive)
            await self.chat(scope, body, send)
            return
        await _send_json(send, 404, _error("not found", "invalid_request_error"))

    async def chat(self, scope: dict[str, Any], raw: bytes, send: Any) -> None:
        body = json.loads(raw)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if len(self.requests) < 1000:
            self.requests.append({"headers": headers, "body": body})
        options = body.get("mock") or {}
        if options.get("first_byte_delay"):
            await asyncio.sleep(options["first_byte_delay"])
        status = options.get("status")
        if status:
            extra = [(b"retry-after", b"7")] if status == 429 else []
            message = options.get("message", f"mock failure {status}")
            await _send_json(send, status, _error(message, "mock_error", code="mock"), extra)
            return
        stream = body.get("stream") is True
        if stream and "stream_options" in body and options.get("reject_stream_options"):
            await _send_json(
                send, 400,
                _error("Unrecognized request argument supplied: stream_options", "invalid_request_error",
                       param="stream_options"),
            )
            return
        words = STORY * (1 + int(options.get("words", self.default_words)) // len(STORY))
        words = words[: int(options.get("words", self.default_words))]
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
        model = body.get("model", "mock")
        if not stream or options.get("not_sse"):
            await _send_json(send, 200, _completion(model, " ".join(words), prompt_tokens, len(words)))
            return
        await self.stream(body, options, words, prompt_tokens, model, send)

    async def stream(
        self, body: dict[str, Any], options: dict[str, Any], words: list[str],
        prompt_tokens: int, model: str, send: Any,
    ) -> None:
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
        })
        delay = float(options.get("delay", self.default_delay))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        send_usage = include_usage and options.get("usage", True)
        cid, created = "chatcmpl-mock" + uuid.uuid4().hex[:20], int(time.time())
        fail_after = options.get("fail_after")
        malformed_after = options.get("malformed_after")

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
        for index, word in enumerate(words):
            if fail_after is not None and index >= fail_after:
                raise RuntimeError("mock upstream failing mid-stream, as asked")
            if malformed_after is not None and index == malformed_after:
                await send({"type": "http.response.body", "body": b"data: {not json\n\n", "more_body": True})
            if delay:
                await asyncio.sleep(delay)
            text = word if index == 0 else " " + word
            if options.get("huge_chunk") and index == 0:
                text = "x" * int(options["huge_chunk"])
            await event([{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}])
        await event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if send_usage:
            await event([], {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                             "total_tokens": prompt_tokens + len(words)})
        if not options.get("no_done"):
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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


def _error(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


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
