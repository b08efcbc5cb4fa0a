"""The streaming relay: a stream's frames to the client, one write each, and nothing else.

`StreamRelay` is a plain ASGI response (not Starlette's StreamingResponse) so
that it owns what moving a stream must get right, whatever the protocols on
either side:

* nothing is sent before the upstream has answered: until then the client's
  HTTP status may still be the upstream's refusal (a 429 with Retry-After);
* each frame the source produces leaves as its own ``http.response.body``
  message at once: no merging, no buffers that wait to fill;
* keep-alive comments fill silences, once the status is settled;
* a client that goes away cancels the upstream call at once, and what was
  used so far is still charged;
* a failure before the first byte is an HTTP error in the client's dialect;
  after it, the dialect's error frame, and the stream ends without the
  protocol's end marker, so a cut-off answer never looks complete (on Lambda
  the failure also goes into the stream's error trailers);
* the platform's deadline (Lambda) ends the stream cleanly before it hits;
* settlement (usage charged, post_call hooks) runs once, after the last byte.

What the frames are (decoding the upstream, translating, usage, the end
marker) is the `StreamSource`'s business: see `aisix.passthrough` and
`aisix.translate.bridge`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..cutoff import DEADLINE, Cutoff
from ..deadline import seconds_left
from ..errors import GatewayError, internal_error, upstream_timeout

if TYPE_CHECKING:
    from ..call import Call
    from ..dialects.base import Dialect
    from ..gateway import Gateway

log = logging.getLogger("aisix.relay")

Write = Callable[[bytes], Awaitable[None]]


class StreamSource(Protocol):
    """One call's stream, on the upstream side of the relay."""

    headers: list[tuple[bytes, bytes]]  # the client's response headers once the stream starts
    completion_chars: int  # text relayed so far, for an estimate when no usage comes

    async def open(self) -> None:
        """Send the upstream request; return once it answered with a stream, else raise `GatewayError`."""

    async def pump(self, write: Write) -> bytes:
        """Relay the stream through ``write``, one frame per call; return the closing frames."""

    async def aclose(self) -> None:
        """Close the upstream response (whatever happened)."""


class StreamRelay:
    """ASGI response for one streamed call whose pre_call hooks have passed."""

    def __init__(self, gateway: "Gateway", call: "Call", source: StreamSource, dialect: "Dialect") -> None:
        self.gateway = gateway
        self.call = call
        self.source = source
        self.dialect = dialect
        self.send: Any = None
        self.started = False
        self.finished = False
        self.sending = False
        self.last_write = 0.0
        self.trailers = False
        self.settled = False
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Relay in this task; a `Cutoff` (the client leaving, the deadline) and a keep-alive timer
        cut in: one task per stream, not an anyio group of three (bench/RESULTS.md)."""
        self.send = send
        extensions = scope.get("extensions") or {}
        # On Lambda, a stream that fails after its first byte is also reported to
        # Lambda, in the error trailers of the streaming protocol (ASGI trailers).
        self.trailers = "http.response.trailers" in extensions and "aws.lambda" in extensions
        self.last_write = time.monotonic()
        seconds = seconds_left(scope, self.gateway.settings.deadline_margin_seconds)
        cutoff = Cutoff(receive, seconds, on_client_left=self._client_left)
        try:
            try:
                try:
                    await self._relay()
                except GatewayError as exc:
                    await self._fail(exc)
                except Exception:
                    log.exception("stream relay for model %s failed", self.call.model_name)
                    await self._fail(internal_error())
            except asyncio.CancelledError:  # also when it lands in _fail's writes
                if not cutoff.caught():
                    raise  # cancelled from outside: not ours to swallow
            finally:
                cutoff.close()
                self._stop_keepalive()
            if cutoff.why == DEADLINE:
                await self._fail(upstream_timeout("The gateway's time limit was reached before the upstream finished."))
        finally:
            # After the last byte: the client's answer never waits for a DynamoDB write.
            # On Lambda the invocation lasts until the app returns, so this still runs.
            await self._settle()

    def _client_left(self) -> None:
        """The client is gone: nothing more is written, and the call is recorded as nginx's 499."""
        if not self.finished:
            self.call.client_disconnected = True
            self.call.status = 499
            self.finished = True

    async def _settle(self) -> None:
        """Charge the call and run post_call hooks, once, whatever cancels the relay around it."""
        if self.settled:
            return
        self.settled = True
        with anyio.CancelScope(shield=True):
            self.gateway.settle_usage(self.call, self.source.completion_chars)
            await self.gateway.pipeline.post_call(self.call)

    async def _relay(self) -> None:
        source = self.source
        try:
            await source.open()
            await self._start(200, source.headers)
            # Keep-alive comments only once the status is settled: until the upstream has
            # answered, the client's status may still be the upstream's error (a 429).
            self.last_write = time.monotonic()
            self._arm_keepalive()
            closing = await source.pump(self._write)
        finally:
            await source.aclose()
        self.finished = True
        self.call.status = 200
        await self._end(closing)

    async def _write(self, frame: bytes) -> None:
        self.sending = True
        try:
            await self.send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            self.sending = False
        self.last_write = time.monotonic()

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.started:
            return
        self.started = True
        raw_headers = list(headers)
        raw_headers.extend((k.encode(), v.encode()) for k, v in self.call.response_headers.items())
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
        """End the call with ``error``: an HTTP error before the first byte, an error frame after."""
        call = self.call
        call.error = error
        call.status = error.status
        if self.finished:
            return
        self.finished = True
        if not self.started:
            call.response_headers.update(error.headers)
            await self._start(error.status, [(b"content-type", b"application/json")])
            await self._end(json.dumps(self.dialect.error_body(error)).encode())
            return
        # A source that knows its stream's state (ids, sequence numbers) writes the frame itself.
        frame = getattr(self.source, "error_frame", None)
        await self._end(frame(error) if frame is not None else self.dialect.error_frame(error), error)

    def _arm_keepalive(self, delay: float | None = None) -> None:
        """A timer for the next keep-alive comment: due ``keepalive_seconds`` after the last write.

        A timer, not a task per stream: nothing runs while frames flow. When it
        fires into a silence it sends the comment from a short-lived task. Not
        while a frame is being written: a slow reader then holds the relay in
        its write, and a comment would only queue behind it.
        """
        if delay is None:
            delay = max(0.0, self.last_write + self.gateway.settings.keepalive_seconds - time.monotonic())
        self._keepalive_timer = asyncio.get_running_loop().call_later(delay, self._keepalive_due)

    def _keepalive_due(self) -> None:
        self._keepalive_timer = None
        if self.finished:
            return
        interval = self.gateway.settings.keepalive_seconds
        if self.sending:
            self._arm_keepalive(interval)
        elif time.monotonic() - self.last_write < interval:
            self._arm_keepalive()
        else:
            self.last_write = time.monotonic()
            self._keepalive_task = asyncio.get_running_loop().create_task(self._send_keepalive())

    async def _send_keepalive(self) -> None:
        try:
            await self.send({"type": "http.response.body", "body": self.dialect.keepalive, "more_body": True})
        except Exception:  # the client is gone: the watcher or the next frame's write says so
            return
        finally:
            self._keepalive_task = None
        if not self.finished:
            self._arm_keepalive()

    def _stop_keepalive(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None


# Lambda records an error type only if it matches ``(Runtime|Function).[A-Z][a-zA-Z]+``;
# anything else (an upstream's numeric code "429", "rate-limit.exceeded") is "Function.Unknown".
_ERROR_TYPE_NAME = re.compile(r"[A-Z][a-zA-Z]+")
_ERROR_TYPE_BY_STATUS = {429: "UpstreamRateLimited", 504: "UpstreamTimeout", 500: "InternalError"}


def lambda_error_type(error: GatewayError) -> str:
    """A Lambda error type for ``error``: its code in CamelCase when that fits the pattern, else by status."""
    code = error.code or ""
    name = "".join(part[:1].upper() + part[1:].lower() for part in re.split(r"[^A-Za-z0-9]+", code) if part)
    if not _ERROR_TYPE_NAME.fullmatch(name):
        status = int(code) if code.isdigit() else error.status  # "429": an HTTP status as a code
        name = _ERROR_TYPE_BY_STATUS.get(status, "UpstreamError" if status >= 500 else "StreamError")
    return "Function." + name


def lambda_error_trailers(error: GatewayError | None) -> list[tuple[bytes, bytes]]:
    """Lambda's stream error trailers: a ``Function.Xxx`` type and a short base64 JSON body."""
    if error is None:
        return []
    kind = lambda_error_type(error)
    body = json.dumps({"errorMessage": error.message[:500], "errorType": kind}).encode()
    return [
        (b"lambda-runtime-function-error-type", kind.encode()),
        (b"lambda-runtime-function-error-body", base64.b64encode(body)),
    ]
