"""A mock Anthropic Messages API, for tests and local runs. NOT a model.

Speaks the wire format of Anthropic's API reference (docs.anthropic.com/en/api/messages,
/en/api/messages-streaming, /en/api/errors) and the ``anthropic`` SDK's types:

* ``POST /v1/messages``: a ``Message`` (``{"id": "msg_...", "type": "message", "role",
  "content", "model", "stop_reason", "stop_sequence", "usage"}``), or with ``"stream": true``
  the event stream ``message_start``, ``content_block_start``, ``ping``,
  ``content_block_delta`` (``text_delta``, ``input_json_delta``, ``thinking_delta``,
  ``signature_delta``), ``content_block_stop``, ``message_delta``, ``message_stop``,
  each as ``event: <type>`` + ``data: <json>``;
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``;
* errors as ``{"type": "error", "error": {"type", "message"}, "request_id"}``, and
  mid-stream as ``event: error``.

Every request must carry ``x-api-key`` and ``anthropic-version`` (401
``authentication_error`` / 400 ``invalid_request_error`` otherwise, as the API says).

Steered by a directive anywhere in the request's text: ``#mock key=value ...`` with
``words=N``, ``delay=SECONDS`` (between stream events), ``tool=NAME`` (a call to NAME
with ``{"city": "Paris"}``, streamed in ``input_json_delta`` fragments),
``args=<base64url JSON>`` (that call's input instead),
``thinking=1`` (a thinking block first, as extended thinking answers),
``fail_after=N`` (after N events, ``event: error`` with ``overloaded_error``),
``status=CODE`` (refused with Anthropic's error for that status; 429 carries
``Retry-After: 7``; 529 is ``overloaded_error``), ``usage=0`` (no usage reported).
A request whose last message hands back a ``tool_result`` is answered with text
quoting it (no tool call), so a coding agent's tool round trip ends.
Answers are deterministic: the same request gets the same text.

Run it alone with ``python -m aisix.local.mocks.anthropic --port 8081``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import zlib
from typing import Any

from ..mock_upstream import STORY, serve_lifespan
from . import after_tool_result, directive, echo_words, json_fragments, take_request, text_of, tool_arguments

TOOL_INPUT = {"city": "Paris"}
TOOL_FRAGMENTS = ('{"city"', ': "Par', 'is"}')
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicMock:
    """ASGI app; ``.requests`` records every request (method, path, query, headers, json)."""

    def __init__(self, words: int = 8, delay: float = 0.0) -> None:
        self.default_words = words
        self.default_delay = delay
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        raw, headers, _, body = await take_request(scope, receive, self.requests)
        path = scope["path"]
        if scope["method"] != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            await _error(send, 404, "not_found_error", "Not found")
            return
        if not headers.get("x-api-key"):
            await _error(send, 401, "authentication_error", "x-api-key header is required")
            return
        if not headers.get("anthropic-version"):
            await _error(send, 400, "invalid_request_error", "anthropic-version: header is required")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            await _error(send, 400, "invalid_request_error", "messages: Field required")
            return
        if not isinstance(body.get("model"), str):
            await _error(send, 400, "invalid_request_error", "model: Field required")
            return
        options = after_tool_result(directive(raw.decode(errors="replace")), _tool_result(body["messages"]))
        status = int(options.get("status", 0))
        if status:
            extra = [(b"retry-after", b"7")] if status == 429 else []
            message = "Overloaded" if status == 529 else f"mock failure {status}"
            await _error(send, status, ERROR_TYPES.get(status, "api_error"), message, extra)
            return
        input_tokens = len(raw) // 4 + 1
        if path.endswith("/count_tokens"):
            await _send_json(send, 200, {"input_tokens": input_tokens})
            return
        if not isinstance(body.get("max_tokens"), int):
            await _error(send, 400, "invalid_request_error", "max_tokens: Field required")
            return
        answer = _answer(options, self.default_words, body["model"], raw, input_tokens)
        if body.get("stream") is True:
            await self._stream(answer, options, send)
        else:
            await _send_json(send, 200, _message(answer, options))

    async def _stream(self, answer: dict[str, Any], options: dict[str, str], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"request-id", b"req_mock")]})
        delay = float(options.get("delay", self.default_delay))
        fail_after = int(options["fail_after"]) if "fail_after" in options else None
        for count, event in enumerate(_events(answer, options)):
            if fail_after is not None and count >= fail_after:
                error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                await send({"type": "http.response.body", "body": _frame(error), "more_body": True})
                break
            if delay and count:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": _frame(event), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def _tool_result(messages: list[Any]) -> str | None:
    """The text of the ``tool_result`` the conversation ends with, if it ends with one."""
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), list):
        return None
    results = [block for block in last["content"] if isinstance(block, dict) and block.get("type") == "tool_result"]
    return " ".join(text_of(block.get("content")) for block in results) if results else None


def _answer(options: dict[str, str], default_words: int, model: str, raw: bytes, input_tokens: int) -> dict[str, Any]:
    count = int(options.get("words", default_words))
    words = echo_words(options["echo"]) if "echo" in options else (STORY * (1 + count // len(STORY)))[:count]
    tool = options.get("tool")
    arguments = tool_arguments(options)
    return {
        "id": f"msg_mock{zlib.crc32(raw):08x}", "words": words, "tool": tool, "model": model,
        "input": TOOL_INPUT if arguments is None else arguments,
        "fragments": TOOL_FRAGMENTS if arguments is None else json_fragments(arguments),
        "thinking": options.get("thinking") == "1",
        "input_tokens": input_tokens, "output_tokens": len(words) + (8 if tool else 0) + 1,
    }


def _usage(answer: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": answer["input_tokens"], "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": output_tokens, "service_tier": "standard"}


THINKING = "The user wants an answer; a short one will do."
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"


def _content(answer: dict[str, Any]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if answer["thinking"]:
        content.append({"type": "thinking", "thinking": THINKING, "signature": SIGNATURE})
    if answer["words"]:
        content.append({"type": "text", "text": " ".join(answer["words"])})
    if answer["tool"]:
        content.append({"type": "tool_use", "id": "toolu_mock0001", "name": answer["tool"], "input": answer["input"]})
    return content


def _message(answer: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": answer["id"], "type": "message", "role": "assistant", "model": answer["model"],
        "content": _content(answer), "stop_reason": "tool_use" if answer["tool"] else "end_turn",
        "stop_sequence": None,
    }
    if options.get("usage") != "0":
        body["usage"] = _usage(answer, answer["output_tokens"])
    return body


def _events(answer: dict[str, Any], options: dict[str, str]) -> list[dict[str, Any]]:
    with_usage = options.get("usage") != "0"
    message: dict[str, Any] = {
        "id": answer["id"], "type": "message", "role": "assistant", "model": answer["model"], "content": [],
        "stop_reason": None, "stop_sequence": None,
    }
    if with_usage:
        message["usage"] = _usage(answer, 1)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    index = 0
    pinged = False

    def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        nonlocal index, pinged
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if not pinged:  # the API sends its first ping after the first block starts
            events.append({"type": "ping"})
            pinged = True
        events.extend({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas)
        events.append({"type": "content_block_stop", "index": index})
        index += 1

    if answer["thinking"]:
        block({"type": "thinking", "thinking": "", "signature": ""},
              [{"type": "thinking_delta", "thinking": THINKING}, {"type": "signature_delta", "signature": SIGNATURE}])
    if answer["words"]:
        block({"type": "text", "text": ""}, [{"type": "text_delta", "text": word if n == 0 else " " + word}
                                             for n, word in enumerate(answer["words"])])
    if answer["tool"]:
        block({"type": "tool_use", "id": "toolu_mock0001", "name": answer["tool"], "input": {}},
              [{"type": "input_json_delta", "partial_json": fragment} for fragment in ("", *answer["fragments"])])
    if not pinged:
        events.append({"type": "ping"})
    delta: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": "tool_use" if answer["tool"] else "end_turn",
                                       "stop_sequence": None}}
    # message_delta's usage is cumulative; without usage the mock sends an empty object's worth.
    delta["usage"] = _usage(answer, answer["output_tokens"]) if with_usage else {}
    events.append(delta)
    events.append({"type": "message_stop"})
    return events



async def _send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"request-id", b"req_mock"), *headers]})
    await send({"type": "http.response.body", "body": data})


async def _error(send: Any, status: int, error_type: str, message: str,
                 headers: list[tuple[bytes, bytes]] = []) -> None:
    await _send_json(send, status, {"type": "error", "error": {"type": error_type, "message": message},
                                    "request_id": "req_mock"}, headers)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--words", type=int, default=8, help="words per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args()
    uvicorn.run(AnthropicMock(args.words, args.delay), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
