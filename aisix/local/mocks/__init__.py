"""Loopback mock upstreams, one per provider, for tests and local runs (dev only, never shipped)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

MAX_RECORDED = 1000  # requests a mock keeps for assertions


async def read_body(receive: Any) -> bytes:
    """The whole ASGI request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def take_request(
    scope: dict[str, Any], receive: Any, requests: list[dict[str, Any]]
) -> tuple[bytes, dict[str, str], str, Any]:
    """Read a request, record it in ``requests`` (method, path, query, headers, json) for tests'
    assertions, and return its raw body, lower-cased headers, query string and parsed JSON (or None)."""
    raw = await read_body(receive)
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    query = scope.get("query_string", b"").decode()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if len(requests) < MAX_RECORDED:
        requests.append({"method": scope["method"], "path": scope["path"], "query": query, "headers": headers,
                         "json": body})
    return raw, headers, query, body


# -- the `#mock` directive, shared by every provider's mock ------------------------------------

DIRECTIVE = re.compile(r"#mock((?:[ \t]+[a-z_]+=[^\s\"\\]+)+)")


def directive(text: str) -> dict[str, str]:
    """The ``#mock key=value ...`` directive anywhere in a request's text, as options (empty without one)."""
    match = DIRECTIVE.search(text) if "#mock" in text else None
    if match is None:
        return {}
    return dict(pair.split("=", 1) for pair in match.group(1).split())


def tool_arguments(options: dict[str, Any]) -> dict[str, Any] | None:
    """The arguments of the directive's tool call: ``args=<base64url of a JSON object>``, so a coding
    agent's own tool can be called with what it needs (Claude Code's ``Bash`` takes ``{"command": ...}``,
    Codex's ``exec_command`` ``{"cmd": ...}``); None when the directive gives none (each mock's default)."""
    encoded = options.get("args")
    if not encoded:
        return None
    return json.loads(base64.urlsafe_b64decode(str(encoded) + "=" * (-len(str(encoded)) % 4)))


def json_fragments(arguments: dict[str, Any]) -> tuple[str, str, str]:
    """Arguments as JSON text in three pieces, as models stream them."""
    text = json.dumps(arguments)
    third = max(1, len(text) // 3)
    return text[:third], text[third:2 * third], text[2 * third:]


def after_tool_result(options: dict[str, Any], result: str | None) -> dict[str, Any]:
    """A request whose last turn hands back a tool's result is answered with words quoting that result,
    never with the tool call again: an agent's round trip (call, the agent runs the tool, result,
    answer) then ends as it does with a model, although the directive is still in the history."""
    if result is None:
        return options
    return {**{k: v for k, v in options.items() if k not in ("tool", "args")}, "echo": result}


def echo_words(result: str, limit: int = 60) -> list[str]:
    """The answer to a tool's result: the result's own words, so a test sees the round trip in the text."""
    return ["Tool", "result:", *result.split()[:limit]]


def text_of(value: Any) -> str:
    """The text inside a tool result in any provider's shape (a string, text blocks, JSON, nested)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(text_of(item) for item in value)
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return value["text"]
        if "json" in value:
            return json.dumps(value["json"])
        return " ".join(text_of(item) for item in value.values())
    return "" if value is None else json.dumps(value)


def chat_tool_result(messages: Any) -> str | None:
    """The text of the ``tool`` message an OpenAI chat conversation ends with, if it ends with one."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    return text_of(last.get("content")) if last.get("role") == "tool" else None


def chat_tool_fragments(options: dict[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    """The directive's tool arguments as OpenAI-style JSON fragments (``default`` without ``args=``)."""
    arguments = tool_arguments(options)
    return default if arguments is None else json_fragments(arguments)


def embedding_vector(text: str, size: int) -> list[float]:
    """A deterministic vector for ``text`` (the same text, the same vector, in every mock)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255 - 0.5, 6) for i in range(size)]
