"""A mock Gemini API (AI Studio, ``generativelanguage.googleapis.com``), for tests and local runs. NOT a model.

Speaks the wire format of the Gemini API reference (ai.google.dev/api:
generate-content, embeddings, tokens) and the shapes of the ``google-genai`` SDK:

* ``POST /v1beta/models/{model}:generateContent``: a GenerateContentResponse
  (``candidates[0].content.parts``, ``finishReason``, ``usageMetadata``,
  ``modelVersion``, ``responseId``);
* ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``: the same
  response in pieces, each a ``data:`` event; the last carries ``finishReason``
  and the full ``usageMetadata``; function calls come whole, with a
  ``thoughtSignature`` as Gemini 3 sends;
* ``POST /v1beta/models/{model}:batchEmbedContents``: ``{"embeddings": [{"values"}]}``;
* ``POST /v1beta/models/{model}:countTokens``: ``{"totalTokens": N}``;
* errors as ``{"error": {"code", "message", "status"}}``; mid-stream, a
  ``data:`` event carrying that error, then the end of the stream.

Every call needs ``x-goog-api-key`` (or ``?key=``): none is a 403
``PERMISSION_DENIED``; a wrong one (when the mock is given a key) is Gemini's
400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``.

Steered by a directive anywhere in the request's text: ``#mock key=value ...``
with ``words=N``, ``delay=SECONDS`` (between stream events), ``tool=NAME`` (a
call to NAME with ``{"city": "Paris"}``, or ``args=<base64url JSON>``), ``thinking=1`` (a ``thought: true``
part first, and ``thoughtsTokenCount``), ``fail_after=N`` (after N events, an
``INTERNAL`` error event), ``status=CODE`` (refused with Gemini's error for it;
429 carries ``Retry-After: 7`` and a ``RetryInfo``), ``usage=0`` (no
``usageMetadata``). A conversation ending with ``functionResponse`` parts is answered
with text quoting them (no call), so a coding agent's tool round trip ends.
Answers are deterministic.

Run it alone with ``python -m aisix.local.mocks.gemini --port 8083``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote

from ..mock_upstream import STORY, serve_lifespan
from . import after_tool_result, directive, echo_words, embedding_vector, take_request, text_of, tool_arguments
PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent|batchEmbedContents|countTokens)$")
TOOL_ARGS = {"city": "Paris"}
# base64 with '+' and '/' in it, as real signatures have, so the URL-safe round trip is exercised.
SIGNATURE = base64.b64encode(b"\xfb\xef\xbe mock thought signature \xff\xfe").decode()
STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class GeminiMock:
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
        match = PATH.match(unquote(scope["path"]))
        if scope["method"] != "POST" or not match:
            await _error(send, 404, f"Requested entity was not found: {scope['path']}")
            return
        params = parse_qs(query)
        key = headers.get("x-goog-api-key") or (params.get("key") or [None])[0]
        if not key:
            await _error(send, 403, "Method doesn't allow unregistered callers (callers without established "
                                    "identity). Please use API Key or other form of API consumer identity to call "
                                    "this API.")
            return
        if self.api_key is not None and key != self.api_key:
            await _error(send, 400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
            return
        if not isinstance(body, dict):
            await _error(send, 400, "Invalid JSON payload received.")
            return
        model, method = match.groups()
        options = after_tool_result(directive(raw.decode(errors="replace")), _tool_result(body.get("contents")))
        if "status" in options:
            status = int(options["status"])
            await _error(send, status, f"mock failure {status}",
                         headers=[(b"retry-after", b"7")] if status == 429 else [])
            return
        if method == "batchEmbedContents":
            await _send_json(send, 200, _embeddings(body))
        elif method == "countTokens":
            await _send_json(send, 200, {"totalTokens": len(raw) // 4 + 1})
        elif method == "generateContent":
            chunks = _chunks(body, options, self.default_words, model, raw)
            await _send_json(send, 200, _merge(chunks))
        elif params.get("alt") != ["sse"]:
            await _error(send, 400, "This mock streams with ?alt=sse only.")
        else:
            await self._stream(_chunks(body, options, self.default_words, model, raw), options, send)

    async def _stream(self, chunks: list[dict[str, Any]], options: dict[str, str], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"x-content-type-options", b"nosniff")]})
        delay = float(options.get("delay", self.default_delay))
        fail_after = int(options["fail_after"]) if "fail_after" in options else None
        for index, chunk in enumerate(chunks):
            if fail_after is not None and index >= fail_after:
                error = {"error": {"code": 500, "message": "An internal error has occurred. Please retry or "
                                   "report in https://developers.generativeai.google/guide/troubleshooting",
                                   "status": "INTERNAL"}}
                await send({"type": "http.response.body", "body": _event(error), "more_body": True})
                break
            if delay and index:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": _event(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _tool_result(contents: Any) -> str | None:
    """The text of the ``functionResponse`` parts the conversation ends with, if it ends with any."""
    last = contents[-1] if isinstance(contents, list) and contents else None
    parts = last.get("parts") if isinstance(last, dict) else None
    results = [part["functionResponse"] for part in parts or [] if isinstance(part, dict) and "functionResponse" in part]
    return " ".join(text_of(result.get("response")) for result in results) if results else None


def _chunks(body: dict[str, Any], options: dict[str, str], default_words: int, model: str,
            raw: bytes) -> list[dict[str, Any]]:
    """The answer as stream chunks (a whole answer is their merge)."""
    count = int(options.get("words", default_words))
    words = echo_words(options["echo"]) if "echo" in options else (STORY * (1 + count // len(STORY)))[:count]
    prompt_tokens = len(raw) // 4 + 1
    thinking = options.get("thinking") == "1"
    response_id = "mock-" + hashlib.sha256(raw).hexdigest()[:16]
    chunks: list[dict[str, Any]] = []

    def chunk(parts: list[dict[str, Any]], finish: str | None = None) -> None:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        chunks.append({"candidates": [candidate], "modelVersion": model, "responseId": response_id})

    if thinking:
        chunk([{"text": "Thinking about the question.", "thought": True}])
    tool = options.get("tool")
    if tool:
        if words:
            chunk([{"text": " ".join(words[:3]) + " "}])
        chunk([{"functionCall": {"name": tool, "args": tool_arguments(options) or TOOL_ARGS}, "thoughtSignature": SIGNATURE}], "STOP")
        completion = min(count, 3) + 5
    else:
        pieces = [" ".join(words[i:i + 3]) for i in range(0, len(words), 3)] or [""]
        for index, piece in enumerate(pieces):
            text = piece if index == 0 else " " + piece
            chunk([{"text": text}], "STOP" if index == len(pieces) - 1 else None)
        completion = len(words)
    if options.get("usage") != "0":
        thoughts = 7 if thinking else 0
        for item in chunks[:-1]:
            item["usageMetadata"] = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        usage: dict[str, Any] = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": completion,
                                 "totalTokenCount": prompt_tokens + completion + thoughts,
                                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        chunks[-1]["usageMetadata"] = usage
    return chunks


def _merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole GenerateContentResponse from stream chunks: parts joined, the last chunk's finish and usage."""
    parts: list[dict[str, Any]] = []
    for chunk in chunks:
        for part in chunk["candidates"][0]["content"]["parts"]:
            if "text" in part and parts and "text" in parts[-1] and part.get("thought") == parts[-1].get("thought"):
                parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
            else:
                parts.append(dict(part))
    last = chunks[-1]
    answer = {"candidates": [{"content": {"parts": parts, "role": "model"},
                              "finishReason": last["candidates"][0].get("finishReason", "STOP"), "index": 0}],
              "modelVersion": last["modelVersion"], "responseId": last["responseId"]}
    if "usageMetadata" in last:
        answer["usageMetadata"] = last["usageMetadata"]
    return answer


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    embeddings = []
    for request in body.get("requests") or []:
        text = "".join(p.get("text", "") for p in request.get("content", {}).get("parts", []))
        size = int(request.get("outputDimensionality") or 8)
        embeddings.append({"values": embedding_vector(text, size)})
    return {"embeddings": embeddings}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\r\n\r\n"



async def _send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=UTF-8"), *headers]})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


async def _error(send: Any, status: int, message: str, reason: str | None = None,
                 headers: list[tuple[bytes, bytes]] = []) -> None:
    error: dict[str, Any] = {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]
    if status == 429:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    await _send_json(send, status, {"error": error}, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description="Mock Gemini API (canned answers, not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--key", default=None, help="the only API key accepted (default: any)")
    parser.add_argument("--words", type=int, default=8, help="words per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args()
    import uvicorn

    print(f"MOCK Gemini on http://{args.host}:{args.port} — canned answers, not a real model", flush=True)
    uvicorn.run(GeminiMock(args.key, args.words, args.delay), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
