"""One ASGI HTTP request whose response is streamed to the runtime API as it is produced.

The counterpart of Mangum's `HTTPCycle`, which buffers. The rules:

* `receive()` gives the request body once, then blocks until the response is finished
  or the runtime connection is gone, and then says `http.disconnect`.
* Nothing goes on the wire before the first `http.response.body` message, so an error
  up to that point still becomes a clean HTTP 500 (a 504 for the deadline).
* After that each body message is one HTTP chunk, written and drained right away. An
  error ends the stream with error trailers; a broken connection turns `send()` into a
  no-op and wakes `receive()` with `http.disconnect`, so the app can cancel its work.
* ASGI's HTTP trailers extension is offered: an app that starts with `trailers: True`
  ends with `http.response.trailers`, and Lambda's two error trailers
  (`Lambda-Runtime-Function-Error-Type` / `-Body`) among them reach the runtime API,
  so an app that ends a stream on an error of its own (an upstream cut off) can say so
  to Lambda without raising.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mangum.types import ASGI, Message, Scope

from .deadline import run_until
from .stream import ResponseStream, encode_prelude, error_trailers

logger = logging.getLogger("aisix.lambda_runtime")

OpenStream = Callable[[bytes, Callable[[], None]], Awaitable[ResponseStream]]

# Clients of this runtime are OpenAI SDKs, which parse this error shape; any other
# client still gets a well-formed JSON error.
INTERNAL_ERROR = {"error": {"message": "Internal server error", "type": "server_error", "param": None, "code": None}}
TIMEOUT_ERROR = {"error": {"message": "Request timed out", "type": "server_error", "param": None, "code": "timeout"}}

STREAM_ERROR = "Runtime.StreamError"
LAMBDA_TRAILERS = (b"lambda-runtime-function-error-type", b"lambda-runtime-function-error-body")
TIMEOUT = "Runtime.Timeout"


class State(enum.Enum):
    REQUEST = enum.auto()  # waiting for http.response.start
    RESPONSE = enum.auto()  # status and headers known, nothing sent yet
    STREAMING = enum.auto()  # prelude sent, body chunks flowing
    COMPLETE = enum.auto()  # last chunk sent (or the stream was ended with an error)
    DISCONNECTED = enum.auto()  # the runtime connection is gone


class StreamingCycle:
    def __init__(self, scope: Scope, body: bytes, open_stream: OpenStream) -> None:
        self.scope = scope
        self.state = State.REQUEST
        self._body: bytes | None = body
        self._open_stream = open_stream
        self._stream: ResponseStream | None = None
        self._status = 200
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailers_expected = False
        self._closed = asyncio.Event()

    async def run(self, app: ASGI, cancel_at: float, grace: float) -> None:
        """Run the app to completion (or the deadline), then settle the response."""
        timed_out, error = await run_until(app(self.scope, self.receive, self.send), cancel_at, grace)
        if timed_out:
            logger.error("Deadline safety net: cancelled the app before Lambda's deadline")
            await self._fail(TIMEOUT, "The function ran out of time", "DeadlineExceeded", 504, TIMEOUT_ERROR)
        elif error is not None:
            if self.state is State.DISCONNECTED:
                logger.info("App ended with %r after the runtime connection was lost", error)
            else:
                logger.error("Unhandled error in the ASGI app", exc_info=error)
                await self._fail(
                    STREAM_ERROR, str(error) or type(error).__name__, type(error).__name__, 500, INTERNAL_ERROR
                )
        elif self.state in (State.REQUEST, State.RESPONSE, State.STREAMING):
            logger.error("The app returned without completing its response")
            await self._fail(STREAM_ERROR, "Response incomplete", "IncompleteResponse", 500, INTERNAL_ERROR)
        if self._stream is not None:
            answer = await self._stream.close()
            if answer is not None and answer.status >= 300:
                logger.error("Runtime API rejected the response: %s %r", answer.status, answer.body[:200])

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._closed.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.state is State.DISCONNECTED:
            return
        kind = message["type"]
        if kind == "http.response.start" and self.state is State.REQUEST:
            self._status = message["status"]
            self._headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            self._trailers_expected = bool(message.get("trailers", False))
            self.state = State.RESPONSE
        elif kind == "http.response.body" and self.state in (State.RESPONSE, State.STREAMING):
            more = message.get("more_body", False)
            await self._write(message.get("body", b""), more=more or self._trailers_expected)
        elif kind == "http.response.trailers" and self._trailers_expected and self.state is State.STREAMING:
            if message.get("more_trailers", False):
                raise RuntimeError("more_trailers is not supported")
            trailers = [
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", [])
                if bytes(k).lower() in LAMBDA_TRAILERS
            ]
            assert self._stream is not None
            await self._stream.end(trailers or None)
            self._complete()
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} in state {self.state.name}")

    async def _write(self, body: bytes, *, more: bool) -> None:
        if self._stream is None:
            self._stream = await self._open(encode_prelude(self._status, self._headers))
            if self._stream is None:
                return
            if self.state is not State.DISCONNECTED:  # the connection may break while opening
                self.state = State.STREAMING
        if not await self._stream.write(body):
            return
        if not more:
            await self._stream.end()
            self._complete()

    async def _open(self, prelude: bytes) -> ResponseStream | None:
        try:
            return await self._open_stream(prelude, self._gone)
        except (ConnectionError, OSError) as exc:
            logger.error("Cannot reach the runtime API: %s", exc)
            self._gone()
            return None

    async def _fail(self, kind: str, message: str, error_type: str, status: int, body: Mapping[str, Any]) -> None:
        """Settle a failed response: an HTTP error if nothing was sent yet, else error trailers."""
        if self.state in (State.REQUEST, State.RESPONSE):
            self._status, self._headers = status, [(b"content-type", b"application/json")]
            await self._write(json.dumps(body).encode(), more=False)
        elif self.state is State.STREAMING and self._stream is not None:
            await self._stream.end(error_trailers(kind, message, error_type))
            self._complete()

    def _complete(self) -> None:
        if self.state is not State.DISCONNECTED:
            self.state = State.COMPLETE
        self._closed.set()

    def _gone(self) -> None:
        if self.state is not State.COMPLETE:
            self.state = State.DISCONNECTED
        self._closed.set()
