"""A tiny ASGI app for the Lambda runtime tests. Pure ASGI, no framework.

Per-process state (startups, disconnects seen, cancellations) is served at /state, so a
later invocation on the same warm process can report what happened to earlier ones.
Chunks carry the `time.monotonic()` at which they were emitted: CLOCK_MONOTONIC is
system-wide, so the emulator's arrival times can be compared with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

STATE: dict[str, Any] = {"startups": 0, "invocations": 0, "disconnects": [], "cancelled": [], "scopes": []}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    STATE["invocations"] += 1
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    route = ROUTES.get(scope["path"])
    if route is None:
        await respond(send, 404, {"error": "not found"})
        return
    await route(scope, receive, send, query)


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("TINY_APP_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "startup refused"})
                return
            STATE["startups"] += 1
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker = os.environ.get("TINY_APP_SHUTDOWN_FILE")
            if marker:
                with open(marker, "w") as fh:
                    json.dump({"invocations": STATE["invocations"]}, fh)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def start_stream(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )


async def stream(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    """`n` chunks `gap` seconds apart: b"chunk <i> <monotonic>\\n".

    With `gate=<dir>`, chunk i+1 is written only once the file `<dir>/<i>` exists (the test
    makes it when chunk i has arrived), for at most 10 s; a chunk that had to go on without
    it ends in " early". So "relayed as produced" is an order of events, not a timing.
    """
    n, gap, gate = int(query.get("n", 4)), float(query.get("gap", 0.1)), query.get("gate")
    await start_stream(send)
    for i in range(n):
        early = ""
        if i and gate:
            for _ in range(2000):
                if os.path.exists(os.path.join(gate, str(i - 1))):
                    break
                await asyncio.sleep(0.005)
            else:
                early = " early"
        elif i:
            await asyncio.sleep(gap)
        await send(
            {"type": "http.response.body", "body": f"chunk {i} {time.monotonic():.6f}{early}\n".encode(),
             "more_body": True}
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})


BIG_CHUNK = 64 * 1024


def big_chunk(i: int) -> bytes:
    """Chunk `i` of /big: its index, then filler; any loss or reordering changes the hash."""
    return (b"%08d" % i + bytes(range(256)) * (BIG_CHUNK // 256))[:BIG_CHUNK]


async def big(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    """`mib` MiB in 64 KiB body messages, as fast as the runtime takes them."""
    headers = [(b"content-type", b"application/octet-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(int(query.get("mib", 32)) * 1024 * 1024 // BIG_CHUNK):
        await send({"type": "http.response.body", "body": big_chunk(i), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def json_route(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    """Deterministic, with cookies and a repeated header, to compare against Mangum."""
    await respond(
        send,
        201,
        {"hello": "world"},
        [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2"), (b"x-multi", b"one"), (b"x-multi", b"two")],
    )


async def echo(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    message = await receive()
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    ext = scope.get("extensions", {}).get("aws.lambda", {})
    ctx = scope.get("aws.context")
    await respond(
        send,
        200,
        {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body_hex": message["body"].hex(),
            "more_body": message.get("more_body"),
            "extension": ext,
            "state": sorted(scope.get("state", {})),
            "context": {
                "aws_request_id": ctx.aws_request_id,
                "remaining_ms": ctx.get_remaining_time_in_millis(),
                "invoked_function_arn": ctx.invoked_function_arn,
            }
            if ctx
            else None,
            "event_keys": sorted(scope.get("aws.event", {})),
        },
    )


async def boom_before(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    if query.get("after_start"):
        await start_stream(send)
    raise ValueError("exploded before the body")


async def boom_mid(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    await start_stream(send)
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    raise RuntimeError("exploded mid-stream " + "x" * 1000)


async def slow(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    """Never finishes on its own: the deadline safety net has to cancel it."""
    try:
        if not query.get("silent"):
            await start_stream(send)
            await send({"type": "http.response.body", "body": b"data: working\n\n", "more_body": True})
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        STATE["cancelled"].append(scope["path"])
        raise


async def watch_disconnect(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    """Streams until receive() says http.disconnect, the way a relay cancels its upstream call."""
    n, gap = int(query.get("n", 100)), float(query.get("gap", 0.02))
    await receive()  # the request body
    listener = asyncio.ensure_future(receive())
    await start_stream(send)
    sent = 0
    for i in range(n):
        await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
        sent += 1
        done, _ = await asyncio.wait({listener}, timeout=gap)
        if done:
            STATE["disconnects"].append({"message": listener.result()["type"], "sent": sent, "of": n})
            # Sends after a disconnect must be harmless no-ops.
            await send({"type": "http.response.body", "body": b"data: late\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
    listener.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def state(scope: Any, receive: Any, send: Any, query: dict[str, str]) -> None:
    await respond(send, 200, {**STATE, "pid": os.getpid(), "tasks": len(asyncio.all_tasks())})


ROUTES = {
    "/stream": stream,
    "/big": big,
    "/json": json_route,
    "/echo": echo,
    "/boom-before": boom_before,
    "/boom-mid": boom_mid,
    "/slow": slow,
    "/disconnect": watch_disconnect,
    "/state": state,
}


async def no_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Like many hand-written apps: HTTP only, lifespan scopes make it raise."""
    assert scope["type"] == "http", "only http"
    await respond(send, 200, {"lifespan": False})
