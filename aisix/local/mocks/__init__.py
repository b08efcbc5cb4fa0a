"""Loopback mock upstreams, one per provider, for tests and local runs (dev only, never shipped)."""

from __future__ import annotations


import json
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
