"""A no-op ASGI app for the Lambda baseline: what the runtime loop and the emulator cost alone.

It answers chat completions itself, in the fast upstream's format (and with its send
stamps), without auth, rate limits or an upstream call: served by the same runtime loop
behind the same emulator as the gateway, the difference between the two is the
gateway's own cost on the Lambda path. ``GET /health`` answers 200.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aisix.local.mock_upstream import serve_lifespan

from .fast_upstream import DONE, StreamTemplate, completion_body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":
        await _json(send, b'{"status":"ok"}')
        return
    body = json.loads(raw)
    options = body.get("bench") or {}
    if body.get("stream") is not True:
        await _json(send, completion_body(str(body.get("model")), int(options.get("words", 20)), 20))
        return
    template = StreamTemplate(str(body.get("model")), False)
    pace = float(options.get("pace_ms", 0)) / 1000
    chunks = int(options.get("chunks", 100))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
    await send({"type": "http.response.body", "body": template.role, "more_body": True})
    for index in range(chunks + 2):
        if pace:
            await asyncio.sleep(pace)
        event = template.content(index) if index < chunks else (template.stop if index == chunks else DONE)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _json(send: Any, payload: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
