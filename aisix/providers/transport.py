"""A lean HTTP/1.1 transport for httpx: asyncio streams and h11, for one call at a time.

Why not httpx's own transport on Lambda: httpcore wraps every socket read in an
anyio cancel scope and runs each one through several layers; on a paced token
stream (one small read per event) that was ~130 µs of CPU per chunk, about 7×
the local server's cost (bench/RESULTS.md). Why not aiohttp there (as the
local server uses): its import costs ~150 ms of every cold start, and a Lambda
instance serves one call at a time, so its pool buys nothing.

This transport keeps httpx's API and exceptions (the gateway maps them the
same way whatever the transport) and does only what an upstream call needs:
HTTP/1.1 over TCP or TLS, keep-alive reuse of a few idle connections per
origin, connect/read/write time-outs from the request, and a report of the
moment the request has left (`aisix.providers.client.report_sent`). h11
frames and parses, so nothing of HTTP is hand-rolled. No proxies, no HTTP/2.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

from .sent import mark_sent

READ_SIZE = 64 * 1024
Origin = tuple[bytes, bytes, int]


class _Stale(Exception):
    """The connection ended before a byte of the answer: the request was never read."""


class _Connection:
    __slots__ = ("reader", "writer", "h11", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()

    async def next_event(self, timeout: float | None) -> Any:
        """The next h11 event, reading from the socket as needed (a read time-out per read)."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                raise httpx.ReadTimeout("timed out reading from the upstream") from None
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            self.h11.receive_data(data)  # b"" marks the end of the connection


class LeanTransport(httpx.AsyncBaseTransport):
    """An httpx transport for processes that make one upstream call at a time (see module doc)."""

    def __init__(self, max_idle_per_origin: int = 4, keepalive_expiry: float = 5.0) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._expiry = keepalive_expiry
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.raw_scheme == b"https" else 80))
        conn = self._reuse(origin)
        if conn is not None:
            try:
                return await self._exchange(origin, conn, request, timeouts, reused=True)
            except _Stale:
                pass  # closed by the upstream while idle, before it read a byte: a fresh one
        conn = await self._connect(origin, timeouts.get("connect"))
        return await self._exchange(origin, conn, request, timeouts, reused=False)

    async def _exchange(
        self, origin: Origin, conn: _Connection, request: httpx.Request, timeouts: dict[str, Any], reused: bool
    ) -> httpx.Response:
        """Send the request on ``conn`` and read the response head; the body streams later.

        On a ``reused`` connection that turns out closed before a byte of the
        answer (the upstream's idle time-out raced ours), raises `_Stale`.
        """
        read_timeout = timeouts.get("read")
        try:
            try:
                await self._send(conn, request, timeouts.get("write"))
                mark_sent()
                event = await conn.next_event(read_timeout)
            except (httpx.ReadError, httpx.WriteError):
                if reused:
                    raise _Stale from None
                raise
            if isinstance(event, h11.ConnectionClosed) and reused:
                raise _Stale
            while isinstance(event, h11.InformationalResponse):
                event = await conn.next_event(read_timeout)
            if not isinstance(event, h11.Response):
                raise httpx.RemoteProtocolError("the upstream closed the connection without answering")
        except h11.RemoteProtocolError as exc:
            conn.close()
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, origin, conn, read_timeout),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
        )

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()

    def _reuse(self, origin: Origin) -> _Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            conn = connections.pop()
            if now - conn.idle_since < self._expiry and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    def release(self, origin: Origin, conn: _Connection) -> None:
        """Keep ``conn`` for the next call if its response ended cleanly; else close it."""
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            connections = self._idle.setdefault(origin, [])
            if len(connections) < self._max_idle:
                conn.idle_since = time.monotonic()
                connections.append(conn)
                return
        conn.close()

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        hostname = host.decode("ascii")
        tls = self._tls() if scheme == b"https" else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    hostname, port, ssl=tls, server_hostname=hostname if tls else None, limit=READ_SIZE
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {hostname}:{port}") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:  # certifi's bundle, as httpx's own transport uses; built on first use
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    @staticmethod
    async def _send(conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        body = request.content  # the gateway always sends a complete body
        head = h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
        data = conn.h11.send(head) + (conn.h11.send(h11.Data(data=body)) if body else b"")
        data += conn.h11.send(h11.EndOfMessage())
        conn.writer.write(data)
        try:
            async with asyncio.timeout(timeout):
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending to the upstream") from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc


class _Body(httpx.AsyncByteStream):
    """The response body, as the upstream's pieces arrive; the connection goes back when it ends."""

    def __init__(self, transport: LeanTransport, origin: Origin, conn: _Connection, timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Connection | None = conn
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                event = await conn.next_event(self._timeout)
                if type(event) is h11.Data:
                    yield bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    break
                else:
                    raise httpx.RemoteProtocolError("the upstream closed the connection before the body ended")
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport.release(self._origin, conn)
