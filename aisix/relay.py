"""The streaming relay: upstream Server-Sent Events in, the same events out, one by one.

`StreamRelay` is a plain ASGI response (not Starlette's StreamingResponse) so
that it owns the things a relay must get right:

* each upstream event leaves as its own ``http.response.body`` message the
  moment it is parsed: no merging, no buffers that wait to fill;
* a client that goes away cancels the upstream call at once (the disconnect
  is watched on ``receive``), and what was used so far is still charged;
* a failure after the first byte reaches the client as an SSE event carrying
  an OpenAI error object, and the stream then ends without ``[DONE]``, so a
  cut-off answer never looks complete;
* whatever the upstream sends, the client gets well-formed events: an event
  that is not a JSON object, an oversized event, or an upstream ``error``
  event ends the stream with the gateway's own error event;
* memory stays bounded: an event is held only up to `MAX_EVENT_BYTES`, and a
  client that reads slowly stalls the upstream read (each write waits for
  the server's flow control) instead of piling chunks up in the gateway.

Each event's data is checked to be a JSON object (one ``raw_decode``, about a
microsecond for a typical chunk); the parsed chunk gives the usage and the
text length for the estimate, so nothing is scanned twice.
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from .deadline import seconds_left
from .errors import GatewayError, internal_error, upstream_error, upstream_timeout
from .providers import upstream_failure_error
from .usage import delta_chars, usage_from_dict

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
# The largest single event the relay holds (a chunk is usually a few hundred bytes).
MAX_EVENT_BYTES = 8 * 1024 * 1024

_raw_decode = json.JSONDecoder().raw_decode


class EventTooLarge(Exception):
    pass


class SSEDecoder:
    """Incremental Server-Sent Events decoder: bytes in, each event's ``data`` out.

    Follows the SSE spec's parsing rules: lines end with CRLF, LF or CR (also
    split across reads), ``data`` lines of one event are joined with LF, one
    leading space after the colon is dropped, comments and other fields
    (``event``, ``id``, ``retry``) are ignored, a leading BOM is skipped, and
    an event not ended by a blank line when the stream ends is dropped.
    Unlike a generic parser it is bounded: an event (or a line) longer than
    ``limit`` characters raises `EventTooLarge` instead of being buffered.
    That bound is why this is not httpx-sse, which buffers a line or an event
    of any length (an upstream sending one endless line would grow the
    gateway's memory without limit) and decodes through two async generators.
    """

    __slots__ = ("_utf8", "_tail", "_tail_size", "_data", "_size", "_limit", "_cr", "_started")

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail: list[str] = []  # the pieces of an incomplete line
        self._tail_size = 0
        self._data: list[str] = []  # the data lines of the event being read
        self._size = 0
        self._limit = limit
        self._cr = False  # the last read ended with CR: a LF starting the next one ends no line
        self._started = False

    def feed(self, raw: bytes) -> list[str]:
        text = self._utf8.decode(raw)
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        return self._lines(text)

    def _lines(self, text: str) -> list[str]:
        if self._cr and text[:1] == "\n":
            text = text[1:]
        self._cr = False
        if not text:
            return []
        if "\r" in text:
            self._cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:  # the middle of a long line: kept in pieces, never re-joined per read
            self._tail.append(text)
            self._tail_size += len(text)
            if self._tail_size + self._size > self._limit:
                raise EventTooLarge
            return []
        lines = text.split("\n")
        if self._tail:
            self._tail.append(lines[0])
            lines[0] = "".join(self._tail)
            self._tail = []
        last = lines.pop()
        if last:
            self._tail.append(last)
        self._tail_size = len(last)
        if self._tail_size + self._size > self._limit or len(lines[0]) > self._limit:
            raise EventTooLarge
        events: list[str] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                    self._size = 0
            elif line.startswith("data"):
                if line.startswith("data:"):
                    value = line[6:] if line[5:6] == " " else line[5:]
                elif line == "data":
                    value = ""
                else:
                    continue  # a field named e.g. "datax": ignored
                self._data.append(value)
                self._size += len(value) + 1
                if self._size > self._limit:
                    raise EventTooLarge
        return events


def decode_chunk(data: str) -> dict[str, Any] | None:
    """The event's data as a JSON object, or None if it is not one."""
    try:
        chunk, end = _raw_decode(data)
        if end != len(data) and data[end:].strip():
            return None
    except (ValueError, RecursionError):
        try:
            chunk = json.loads(data)  # leading white space, rare
        except (ValueError, RecursionError):
            return None
    return chunk if isinstance(chunk, dict) else None


class StreamRelay:
    """ASGI response for one streamed chat completion (pre_call hooks already passed)."""

    def __init__(self, gateway: "Gateway", call: "Call") -> None:
        self.gateway = gateway
        self.call = call
        self.client_wants_usage = _client_wants_usage(call.body)
        self.send: Any = None
        self.started = False
        self.finished = False
        self.sending = False
        self.last_write = 0.0
        self.completion_chars = 0
        self.trailers = False
        self.settled = False
        self.tasks: anyio.abc.TaskGroup | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.send = send
        extensions = scope.get("extensions") or {}
        # On Lambda, a stream that fails after its first byte is also reported to
        # Lambda, in the error trailers of the streaming protocol (ASGI trailers).
        self.trailers = "http.response.trailers" in extensions and "aws.lambda" in extensions
        self.last_write = time.monotonic()
        call = self.call
        try:
            with anyio.move_on_after(seconds_left(scope, self.gateway.settings.deadline_margin_seconds)) as deadline:
                async with anyio.create_task_group() as tasks:
                    self.tasks = tasks
                    tasks.start_soon(self._watch_disconnect, receive, tasks.cancel_scope)
                    try:
                        await self._relay()
                    except GatewayError as exc:
                        await self._fail(exc)
                    except Exception:
                        log.exception("stream relay for model %s failed", call.model_name)
                        await self._fail(internal_error())
                    finally:
                        tasks.cancel_scope.cancel()
            if deadline.cancelled_caught:
                await self._fail(
                    upstream_timeout("The gateway's time limit was reached before the upstream finished.")
                )
        finally:
            # After the last byte: the client's answer never waits for a DynamoDB write.
            # On Lambda the invocation lasts until the app returns, so this still runs.
            await self._settle()

    async def _settle(self) -> None:
        """Charge the call and run post_call hooks, once, whatever cancels the relay around it."""
        if self.settled:
            return
        self.settled = True
        with anyio.CancelScope(shield=True):
            self.gateway.settle_usage(self.call, self.completion_chars)
            await self.gateway.pipeline.post_call(self.call)

    async def _relay(self) -> None:
        call, gateway = self.call, self.gateway
        response = await gateway.open_upstream(call, stream=True)
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                await gateway.read_stray_usage(call, response)
                raise upstream_error("The upstream answered a streamed request without an event stream.")
            await self._start(200)
            # Keep-alive comments only once the status is settled: until the upstream has
            # answered, the client's status may still be the upstream's error (a 429).
            assert self.tasks is not None
            self.last_write = time.monotonic()
            self.tasks.start_soon(self._keepalive)
            decoder = SSEDecoder(MAX_EVENT_BYTES)
            done = False
            async for raw in response.aiter_bytes():
                for data in decoder.feed(raw):
                    if await self._event(data):
                        done = True
                        break
                if done:
                    break
        except EventTooLarge:
            raise upstream_error(
                f"The upstream sent an event larger than the gateway relays ({MAX_EVENT_BYTES} bytes)."
            ) from None
        except httpx.HTTPError as exc:
            raise upstream_failure_error(
                exc, "The upstream stopped sending before the answer was complete.", "The upstream stream failed"
            ) from None
        finally:
            await response.aclose()
        if not done:
            raise upstream_error("The upstream closed the stream before it was complete.")
        self.finished = True
        call.status = 200
        await self._end(DONE)

    async def _event(self, data: str) -> bool:
        """Relay one upstream event; True once the stream is done."""
        if not data:
            return False
        if data == "[DONE]":
            return True
        call = self.call
        chunk = decode_chunk(data)
        if chunk is None:
            raise upstream_error("The upstream sent an event that is not a JSON object.")
        if "error" in chunk:
            raise self.gateway.upstream_error_event(call, chunk)
        usage = chunk.get("usage")
        chars = 0
        if usage is not None:
            call.usage = usage_from_dict(usage)
            if not self.client_wants_usage and not chunk.get("choices"):
                return False  # the usage chunk the gateway asked for, hidden from this client
        else:
            chars = delta_chars(chunk)
        if self.gateway.pipeline.chunk_hooks:
            self.gateway.pipeline.on_chunk(call, data)
        if "\n" in data:  # multi-line data keeps one "data:" field per line
            data = data.replace("\n", "\ndata: ")
        self.sending = True
        try:
            await self.send({"type": "http.response.body", "body": b"data: " + data.encode() + b"\n\n",
                             "more_body": True})
        finally:
            self.sending = False
        self.completion_chars += chars  # relayed: charged if the upstream reports no usage
        self.last_write = time.monotonic()
        return False

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
        """Send SSE comments while the upstream is silent, so idle time-outs on the way don't fire.

        Not while an event is being written: a slow reader then holds the
        relay in its write, and a comment would only queue behind it.
        """
        interval = self.gateway.settings.keepalive_seconds
        while True:
            await anyio.sleep(max(0.0, self.last_write + interval - time.monotonic()))
            if self.finished:
                return
            if self.sending:
                await anyio.sleep(interval)
                continue
            if time.monotonic() - self.last_write >= interval:
                self.last_write = time.monotonic()
                await self.send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    async def _watch_disconnect(self, receive: Any, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.call.client_disconnected = True
                    self.call.status = 499
                    self.finished = True
                scope.cancel()
                return


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


def _client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))
