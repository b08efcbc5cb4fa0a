"""The streaming relay: upstream Server-Sent Events in, the same events out, one by one.

`StreamRelay` is a plain ASGI response (not Starlette's StreamingResponse) so
that it owns the three things a relay must get right:

* each upstream event leaves as its own ``http.response.body`` message the
  moment it is parsed: no merging, no buffers that wait to fill;
* a client that goes away cancels the upstream call at once (the disconnect
  is watched on ``receive``), and what was used so far is still charged;
* a failure after the first byte reaches the client as an SSE event carrying
  an OpenAI error object, and the stream then ends without ``[DONE]``, so a
  cut-off answer never looks complete.

Upstream SSE is parsed by httpx-sse (multi-line data, comments, CRLF,
keep-alives). The only JSON parsed per stream is the final usage chunk.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from httpx_sse import EventSource, SSEError

from .errors import GatewayError, upstream_error, upstream_timeout
from .providers import is_timeout
from .usage import (
    chunk_has_usage,
    content_chars,
    estimate_prompt_tokens,
    estimate_tokens,
    parse_chunk,
    usage_from_dict,
)
from .hooks.base import TokenUsage

if TYPE_CHECKING:
    from .gateway import Gateway
    from .hooks.base import Call

log = logging.getLogger("aisix.relay")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamRelay:
    """ASGI response for one streamed chat completion (pre_call hooks already passed)."""

    def __init__(self, gateway: "Gateway", call: "Call") -> None:
        self.gateway = gateway
        self.call = call
        self.client_wants_usage = _client_wants_usage(call.body)
        self.send: Any = None
        self.started = False
        self.finished = False
        self.last_write = 0.0
        self.completion_chars = 0
        self.saw_error_event = False
        self.trailers = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.send = send
        extensions = scope.get("extensions") or {}
        # On Lambda, a stream that fails after its first byte is also reported to
        # Lambda, in the error trailers of the streaming protocol (ASGI trailers).
        self.trailers = "http.response.trailers" in extensions and "aws.lambda" in extensions
        self.last_write = time.monotonic()
        call = self.call
        try:
            with anyio.move_on_after(_seconds_to_deadline(scope, self.gateway)) as deadline:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._watch_disconnect, receive, tasks.cancel_scope)
                    tasks.start_soon(self._keepalive)
                    try:
                        await self._relay()
                    except GatewayError as exc:
                        await self._fail(exc)
                    finally:
                        tasks.cancel_scope.cancel()
            if deadline.cancelled_caught:
                await self._fail(
                    upstream_timeout("The gateway's time limit was reached before the upstream finished.")
                )
        finally:
            with anyio.CancelScope(shield=True):
                if call.usage is None:
                    self._estimate_usage()
                await self.gateway.pipeline.post_call(call)

    async def _relay(self) -> None:
        call, gateway = self.call, self.gateway
        response = await gateway.open_upstream(call, stream=True)
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise upstream_error("The upstream answered a streamed request without an event stream.")
            await self._start(200)
            chunk_hooks = gateway.pipeline.chunk_hooks
            hide_usage = not self.client_wants_usage
            send = self.send
            done = False
            async for event in EventSource(response).aiter_sse():
                data = event.data
                if not data:
                    continue
                if data == "[DONE]":
                    done = True
                    break
                if chunk_has_usage(data):
                    chunk = parse_chunk(data)
                    if chunk is not None:
                        call.usage = usage_from_dict(chunk.get("usage"))
                        if "error" in chunk:
                            self.saw_error_event = True
                        if hide_usage and not chunk.get("choices"):
                            continue
                elif data.startswith('{"error"'):
                    self.saw_error_event = True
                else:
                    self.completion_chars += content_chars(data)
                if chunk_hooks:
                    gateway.pipeline.on_chunk(call, data)
                if "\n" in data:  # multi-line data keeps one "data:" field per line
                    data = data.replace("\n", "\ndata: ")
                await send(
                    {"type": "http.response.body", "body": b"data: " + data.encode() + b"\n\n", "more_body": True}
                )
                self.last_write = time.monotonic()
        except (httpx.HTTPError, SSEError) as exc:
            if is_timeout(exc):
                raise upstream_timeout("The upstream stopped sending before the answer was complete.") from None
            raise upstream_error(f"The upstream stream failed: {type(exc).__name__}.") from None
        finally:
            await response.aclose()
        if done:
            self.finished = True
            call.status = 200
            await self._end(DONE)
        elif self.saw_error_event:
            self.finished = True
            call.status = 502
            await self._end(b"", upstream_error("The upstream reported an error in the stream."))
        else:
            raise upstream_error("The upstream closed the stream before it was complete.")

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.started:
            return
        self.started = True
        call = self.call
        raw_headers = list(headers if headers is not None else SSE_HEADERS)
        raw_headers.extend((k.encode(), v.encode()) for k, v in call.response_headers.items())
        await self.send(
            {"type": "http.response.start", "status": status, "headers": raw_headers, "trailers": self.trailers}
        )

    async def _end(self, body: bytes, error: GatewayError | None = None) -> None:
        """The last body message; on Lambda, then the trailers, with ``error`` if the stream failed."""
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        if self.trailers:
            await self.send(
                {"type": "http.response.trailers", "headers": lambda_error_trailers(error), "more_trailers": False}
            )

    async def _fail(self, error: GatewayError) -> None:
        """End the call with ``error``: an HTTP error before the first byte, an SSE event after."""
        call = self.call
        call.error = error
        call.status = error.status
        if self.finished:
            return
        self.finished = True
        if not self.started:
            call.response_headers.update(error.headers)
            await self._start(error.status, [(b"content-type", b"application/json")])
            await self._end(error.to_json())
            return
        await self._end(error.to_sse(), error)

    async def _keepalive(self) -> None:
        """Send SSE comments while the upstream is silent, so idle time-outs on the way don't fire."""
        interval = self.gateway.settings.keepalive_seconds
        while True:
            await anyio.sleep(max(0.0, self.last_write + interval - time.monotonic()))
            if self.finished:
                return
            if time.monotonic() - self.last_write >= interval:
                self.last_write = time.monotonic()
                await self._start(200)
                await self.send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    async def _watch_disconnect(self, receive: Any, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.call.state["client_disconnected"] = True
                    self.finished = True
                scope.cancel()
                return

    def _estimate_usage(self) -> None:
        call = self.call
        prompt = estimate_prompt_tokens(call.body)
        completion = estimate_tokens(self.completion_chars)
        call.usage = TokenUsage(prompt, completion, prompt + completion)
        call.usage_estimated = True


def lambda_error_trailers(error: GatewayError | None) -> list[tuple[bytes, bytes]]:
    """Lambda's stream error trailers: a ``Function.Xxx`` type and a short base64 JSON body."""
    if error is None:
        return []
    kind = "Function." + "".join(part.title() for part in (error.code or "stream_error").split("_"))
    body = json.dumps({"errorMessage": error.message[:500], "errorType": kind}).encode()
    return [
        (b"lambda-runtime-function-error-type", kind.encode()),
        (b"lambda-runtime-function-error-body", base64.b64encode(body)),
    ]


def _client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _seconds_to_deadline(scope: dict[str, Any], gateway: "Gateway") -> float:
    """Time left before the platform's deadline (Lambda), less a margin to end cleanly."""
    lambda_ext = scope.get("extensions", {}).get("aws.lambda")
    if not lambda_ext or not lambda_ext.get("deadline_ms"):
        return float("inf")
    left = lambda_ext["deadline_ms"] / 1000 - time.time() - gateway.settings.deadline_margin_seconds
    return max(0.0, left)
