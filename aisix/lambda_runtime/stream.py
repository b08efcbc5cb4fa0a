"""The streamed `/response` POST: prelude, delimiter, one HTTP chunk per body message, trailers.

Written with h11 because the mid-stream error path needs HTTP trailers, which neither
`http.client` nor httpx can send. h11 frames chunks with strict CRLF and hands every
`Data` event to the socket as one chunk, so nothing is merged or held back here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterable

import h11

logger = logging.getLogger("aisix.lambda_runtime")

DELIMITER = b"\x00" * 8
HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"

# Hop-by-hop headers describe one connection; they make no sense in the prelude.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
# The trailer section must stay under 4096 bytes or Lambda reports Runtime.TruncatedResponse.
_MAX_ERROR_MESSAGE = 512


def encode_prelude(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The JSON prelude plus delimiter, in the function URL format.

    Set-Cookie headers move to `cookies`; repeated headers are joined with commas,
    as a function URL (payload 2.0) response expects.
    """
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "set-cookie":
            cookies.append(value)
        elif name in _HOP_BY_HOP:
            continue
        elif name in merged:
            merged[name] = f"{merged[name]},{value}"
        else:
            merged[name] = value
    prelude = {"statusCode": status, "headers": merged, "cookies": cookies}
    return json.dumps(prelude, separators=(",", ":")).encode() + DELIMITER


def error_payload(message: str, error_type: str) -> dict[str, str]:
    """The `{"errorMessage", "errorType"}` body Lambda expects, short by construction."""
    return {"errorMessage": message[:_MAX_ERROR_MESSAGE], "errorType": error_type}


def error_trailers(kind: str, message: str, error_type: str) -> list[tuple[str, str]]:
    """Trailers that mark a stream as failed: `kind` is `Runtime.Xxx` / `Function.Xxx`."""
    body = json.dumps(error_payload(message, error_type), separators=(",", ":")).encode()
    return [(ERROR_TYPE, kind), (ERROR_BODY, base64.b64encode(body).decode("ascii"))]


class Answer:
    """What the runtime API said back: status code and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


async def read_answer(conn: h11.Connection, reader: asyncio.StreamReader) -> Answer:
    """Read one HTTP response off `reader`; raise ConnectionError if the peer goes away first."""
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("runtime API closed the connection")
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {name.decode(): value.decode("latin-1") for name, value in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return Answer(status, headers, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("runtime API closed the connection before answering")


class ResponseStream:
    """One open streaming `/response` request.

    A background reader watches the connection while we write: Lambda's server only
    speaks at the end (202), so EOF, a reset or an early answer all mean the stream is
    gone. `on_gone` fires once, as soon as that is known, so the app can stop work.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: h11.Connection,
        on_gone: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self._on_gone = on_gone
        self._ended = False
        self.gone = False
        self._answer: asyncio.Task[Answer | None] | None = None

    async def start(self, request: h11.Request, first: bytes) -> None:
        """Send the request head and the first chunk (the prelude) in one write."""
        self._writer.write(self._conn.send(request) + self._conn.send(h11.Data(data=first)))
        self._answer = asyncio.ensure_future(self._watch())
        await self._drain()

    async def write(self, data: bytes) -> bool:
        """Send `data` as one chunk. False once the runtime connection is gone."""
        if self.gone:
            return False
        if data:
            self._writer.write(self._conn.send(h11.Data(data=data)))
            await self._drain()
        return not self.gone

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """Send the last chunk, with error trailers if the stream failed."""
        if self.gone or self._ended:
            return
        self._ended = True
        self._writer.write(self._conn.send(h11.EndOfMessage(headers=trailers or [])))
        await self._drain()

    async def close(self, timeout: float = 10.0) -> Answer | None:
        """Wait for the runtime API's answer to a finished stream, then drop the connection."""
        answer = None
        if self._answer is not None and self._ended and not self.gone:
            done, _ = await asyncio.wait({self._answer}, timeout=timeout)
            answer = self._answer.result() if done else None
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        self._writer.close()
        return answer

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            self._lost("write to the runtime API failed")

    async def _watch(self) -> Answer | None:
        try:
            answer = await read_answer(self._conn, self._reader)
        except (ConnectionError, OSError, h11.ProtocolError) as exc:
            self._lost(str(exc) or type(exc).__name__)
            return None
        if not self._ended:
            self._lost(f"runtime API answered {answer.status} before the stream ended")
        return answer

    def _lost(self, reason: str) -> None:
        if self.gone or (self._ended and self._answer is not None and self._answer.done()):
            return
        self.gone = True
        logger.warning("Response stream lost: %s", reason)
        self._on_gone()
