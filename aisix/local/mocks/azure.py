"""A mock Azure OpenAI API, for tests and local runs. NOT a model.

Speaks the wire format of Azure OpenAI's inference REST reference (the
2024-10-21 GA spec and the v1 API): OpenAI's chat completions and embeddings
with Azure's additions:

* URLs: ``/openai/deployments/{deployment}/chat/completions?api-version=...``
  (and ``/embeddings``), where ``api-version`` is required (404 without it, as
  Azure answers), and the v1 API ``/openai/v1/chat/completions`` (and
  ``/embeddings``) with the deployment's name as ``model`` in the body;
* the key in the ``api-key`` header (401 without it, Azure's message);
* ``prompt_filter_results`` (in the answer, and as a first stream chunk with no
  choices) and ``content_filter_results`` on every choice;
* errors as ``{"error": {"code", "message"}}``, Azure's shape (no ``type``).

Steered by a directive anywhere in the request's text: ``#mock key=value ...``
with ``words=N``, ``delay=SECONDS`` (between stream events), ``tool=NAME`` (a
call to NAME with ``{"city": "Paris"}``, streamed in argument fragments),
``args=<base64url JSON>`` (that call's arguments instead), ``fail_after=N`` (after N events, an error event, then the end),
``status=CODE`` (refused; 429 carries ``Retry-After: 7``), ``usage=0`` (no
usage), ``filter=prompt`` (the prompt refused: 400 ``content_filter``) and
``filter=output`` (the answer cut with ``finish_reason: "content_filter"``).
A conversation that ends with a ``tool`` message is answered with text quoting it
(no tool call), so a coding agent's tool round trip ends. Answers are deterministic.

Run it alone with ``python -m aisix.local.mocks.azure --port 8084``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote

from ..mock_upstream import STORY, serve_lifespan
from . import (after_tool_result, chat_tool_fragments, chat_tool_result, directive, echo_words, embedding_vector,
               take_request)
DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)$")
V1_PATH = re.compile(r"^/openai/v1/(chat/completions|embeddings)$")
TOOL_FRAGMENTS = ('{"city"', ': "Par', 'is"}')
SAFE = {"hate": {"filtered": False, "severity": "safe"}, "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}
FLAGGED = {**SAFE, "violence": {"filtered": True, "severity": "high"}}


class AzureOpenAIMock:
    """ASGI app; ``.requests`` records every request (method, path, query, headers, json)."""

    def __init__(self, api_key: str | None = None, words: int = 8, delay: float = 0.0) -> None:
        self.api_key = api_key
        self.default_words = words
        self.default_delay = delay
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        raw, headers, query, body = await take_request(scope, receive, self.requests)
        path = unquote(scope["path"])
        deployment_match, v1_match = DEPLOYMENT_PATH.match(path), V1_PATH.match(path)
        if scope["method"] != "POST" or not (deployment_match or v1_match):
            await _error(send, 404, "404", "Resource not found")
            return
        if not headers.get("api-key") or (self.api_key is not None and headers["api-key"] != self.api_key):
            await _error(send, 401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                                           "Make sure to provide a valid key for an active subscription and use a "
                                           "correct regional API endpoint for your resource.")
            return
        if deployment_match and not parse_qs(query).get("api-version"):
            await _error(send, 404, "404", "Resource not found")
            return
        if not isinstance(body, dict):
            await _error(send, 400, "BadRequest", "Invalid JSON body.")
            return
        if deployment_match:
            deployment, endpoint = deployment_match.groups()
        else:
            deployment, endpoint = str(body.get("model") or ""), v1_match.group(1)  # type: ignore[union-attr]
            if not deployment:
                await _error(send, 400, "BadRequest", "model is required on the v1 API.")
                return
        options = after_tool_result(directive(raw.decode(errors="replace")),
                                    chat_tool_result(body.get("messages")) if isinstance(body, dict) else None)
        if "status" in options:
            status = int(options["status"])
            await _error(send, status, str(status), f"mock failure {status}",
                         [(b"retry-after", b"7"), (b"retry-after-ms", b"7000")] if status == 429 else [])
            return
        if options.get("filter") == "prompt":
            await _send_json(send, 400, {"error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                           "management policy.", "type": None, "param": "prompt", "code": "content_filter",
                "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                              "content_filter_result": FLAGGED}}})
            return
        if endpoint == "embeddings":
            await _send_json(send, 200, _embeddings(body, deployment))
        elif body.get("stream") is True:
            await self._stream(body, options, deployment, raw, send)
        else:
            await _send_json(send, 200, self._completion(body, options, deployment, raw))

    def _words(self, options: dict[str, str]) -> list[str]:
        if "echo" in options:
            return echo_words(options["echo"])
        count = int(options.get("words", self.default_words))
        return (STORY * (1 + count // len(STORY)))[:count]

    def _completion(self, body: dict[str, Any], options: dict[str, str], deployment: str,
                    raw: bytes) -> dict[str, Any]:
        words = self._words(options)
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words), "refusal": None}
        finish = "content_filter" if options.get("filter") == "output" else "stop"
        if options.get("tool"):
            message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [{
                "id": _call_id(raw), "type": "function",
                "function": {"name": options["tool"], "arguments": "".join(chat_tool_fragments(options, TOOL_FRAGMENTS))}}]}
            finish = "tool_calls"
        answer: dict[str, Any] = {
            "id": _completion_id(raw), "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_mock",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish,
                         "content_filter_results": FLAGGED if finish == "content_filter" else SAFE}],
        }
        if options.get("usage") != "0":
            answer["usage"] = _usage(raw, len(words))
        return answer

    async def _stream(self, body: dict[str, Any], options: dict[str, str], deployment: str, raw: bytes,
                      send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        cid = _completion_id(raw)
        words = self._words(options)

        def chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
            out = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                   "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_mock", "choices": choices, **extra}
            if include_usage:
                out.setdefault("usage", None)
            return out

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
                    "content_filter_results": FLAGGED if finish == "content_filter" else ({} if finish else SAFE)}

        events = [{"id": "", "object": "", "created": 0, "model": "", "choices": [],
                   "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}]},
                  chunk([choice({"role": "assistant", "content": "", "refusal": None})])]
        if options.get("tool"):
            events.append(chunk([choice({"tool_calls": [{"index": 0, "id": _call_id(raw), "type": "function",
                                                         "function": {"name": options["tool"], "arguments": ""}}]})]))
            events += [chunk([choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})])
                       for piece in chat_tool_fragments(options, TOOL_FRAGMENTS)]
            finish = "tool_calls"
        else:
            events += [chunk([choice({"content": word if i == 0 else " " + word})]) for i, word in enumerate(words)]
            finish = "content_filter" if options.get("filter") == "output" else "stop"
        events.append(chunk([choice({}, finish)]))
        if include_usage and options.get("usage") != "0":
            events.append(chunk([], usage=_usage(raw, len(words))))
        delay = float(options.get("delay", self.default_delay))
        fail_after = int(options["fail_after"]) if "fail_after" in options else None
        for index, event in enumerate(events):
            if fail_after is not None and index >= fail_after:
                error = {"error": {"message": "The server had an error while processing your request.",
                                   "type": "server_error", "param": None, "code": "500"}}
                await send({"type": "http.response.body", "body": _event(error), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if delay and index:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": _event(event), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _usage(raw: bytes, completion: int) -> dict[str, Any]:
    prompt = len(raw) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def _completion_id(raw: bytes) -> str:
    return "chatcmpl-" + hashlib.sha256(raw).hexdigest()[:29]


def _call_id(raw: bytes) -> str:
    return "call_" + hashlib.sha256(b"tool" + raw).hexdigest()[:24]


def _embeddings(body: dict[str, Any], deployment: str) -> dict[str, Any]:
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []]
    size = int(body.get("dimensions") or 8)
    data = []
    for index, text in enumerate(texts):
        data.append({"object": "embedding", "index": index, "embedding": embedding_vector(text, size)})
    tokens = sum(len(t) for t in texts) // 4 + len(texts)
    return {"object": "list", "model": "text-embedding-3-small", "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"



async def _send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"apim-request-id", b"mock"), *headers]})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


async def _error(send: Any, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] = []) -> None:
    await _send_json(send, status, {"error": {"code": code, "message": message}}, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description="Mock Azure OpenAI API (canned answers, not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8084)
    parser.add_argument("--key", default=None, help="the only api-key accepted (default: any)")
    parser.add_argument("--words", type=int, default=8, help="words per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args()
    import uvicorn

    print(f"MOCK Azure OpenAI on http://{args.host}:{args.port} — canned answers, not a real model", flush=True)
    uvicorn.run(AzureOpenAIMock(args.key, args.words, args.delay), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
