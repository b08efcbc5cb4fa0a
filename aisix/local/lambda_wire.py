"""Lambda's runtime API protocol, spelled out for the local emulation.

The emulator is the test oracle of `aisix/lambda_runtime/`, so it states the protocol
itself (from AWS's documentation and its runtime interface emulator) instead of importing
the constants of the code under test: a typo there must fail the tests, not pass both sides.
Shared by the emulator and the function URL front door, which import it and not each other.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import h11

RUNTIME = "/2018-06-01/runtime"
EXTENSION = "/2020-01-01/extension"
DELIMITER = b"\x00" * 8  # between a streamed response's JSON prelude and its body
RESPONSE_MODE = "Lambda-Runtime-Function-Response-Mode"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
# What Lambda records as an error type; anything else becomes Runtime.Unknown.
ERROR_TYPE_PATTERN = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")
MAX_BUFFERED = 6 * 1024 * 1024 + 100  # Lambda answers 413 above this
MAX_TRAILER_SECTION = 4096  # at or above: Runtime.TruncatedResponse
OK = {"status": "OK"}


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def api_error(message: str, error_type: str) -> dict[str, str]:
    """The error body of Lambda's APIs (Go's `model.ErrorResponse`)."""
    return {"errorMessage": message, "errorType": error_type}


def request_header(request: h11.Request, name: str) -> str | None:
    name_b = name.lower().encode()
    return next((v.decode("latin-1") for k, v in request.headers if k == name_b), None)


class Exchange:
    """One request/response on a server connection, recording the raw bytes it read.

    `keep_raw` bounds what `raw` keeps (the head of the request); `tail` always holds the
    last `TAIL` bytes, enough to measure a trailer section without keeping a whole stream.
    """

    TAIL = 2 * MAX_TRAILER_SECTION

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer
        self.raw = bytearray()
        self.tail = bytearray()
        self.raw_complete = True
        self.keep_raw: int | None = None

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(65536)
            self._record(data)
            self.conn.receive_data(data)

    def _record(self, data: bytes) -> None:
        if self.raw_complete:
            if self.keep_raw is None or len(self.raw) + len(data) <= self.keep_raw:
                self.raw += data
            else:
                self.raw_complete = False
        self.tail += data
        del self.tail[: max(len(self.tail) - self.TAIL, 0)]

    async def read_body(self, limit: int | None = None) -> bytes | None:
        """The whole request body, or None once it exceeds `limit`."""
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if limit is not None and len(body) > limit:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise ConnectionError("connection closed before the request body ended")

    async def respond(
        self, status: int, body: Any, *, headers: Sequence[tuple[str, str]] = (), close: bool = False
    ) -> bool:
        payload = json.dumps(body).encode()
        head = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers]
        if close:
            head.append(("Connection", "close"))
        response = h11.Response(status_code=status, headers=head, reason=reason_phrase(status))
        self.writer.write(
            self.conn.send(response) + self.conn.send(h11.Data(data=payload)) + self.conn.send(h11.EndOfMessage())
        )
        await self.writer.drain()
        return not close


async def unless_hangup(reader: asyncio.StreamReader, coro: Any) -> tuple[asyncio.Future[Any], bool]:
    """Run `coro` until it finishes or the client hangs up (a waiting client sends nothing).

    Returns its task (cancelled if the client left first) and whether the client left; both
    can be true at once, and then the caller undoes what the task took.
    """
    task = asyncio.ensure_future(coro)
    hangup = asyncio.ensure_future(reader.read(1))
    done, pending = await asyncio.wait({task, hangup}, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()
    if pending:
        await asyncio.wait(pending)  # a read still waiting would block the next one on this reader
    return task, hangup in done
