"""An httpx transport over aiohttp's pool, for the local/container server.

Why aiohttp: httpx's own transport (httpcore + anyio + h11) spent most of a
relay's CPU (README, "Performance"). Why not the httpx-aiohttp package that
used to sit here: per call it rebuilt a ``ClientTimeout``, re-serialised and
re-parsed the URL, and let aiohttp read every header back out of httpx's
``Headers`` one key at a time (a decode per lookup); with ``AsyncClient.send``
around it that was ~430 µs of a ~600 µs upstream call (bench/RESULTS.md).

This transport passes aiohttp what it needs in the form it takes (a parsed
``yarl.URL`` and a ``ClientTimeout`` cached per value, the headers as plain
pairs), and maps aiohttp's failures to the httpx exceptions that say what
happened, the aiohttp one chained as their cause:

* no connection at all (refused, DNS, TLS): `httpx.ConnectError`;
* no connection in time (connect or pool time-out): `httpx.ConnectTimeout`;
* no answer in time: `httpx.ReadTimeout`;
* anything later (the upstream hung up, a broken body): `httpx.ReadError`.

The moment the request headers are written is reported through aiohttp's
trace hook (`aisix.providers.sent`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from yarl import URL

from .sent import mark_sent

READ_SIZE = 64 * 1024


def _httpx_error(exc: aiohttp.ClientError) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return httpx.ReadError(message)
    return httpx.TransportError(message)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport API over one ``aiohttp.ClientSession``, built on first use inside the loop."""

    def __init__(self, max_connections: int = 1000, keepalive_expiry: float | None = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        async def headers_sent(*_: object) -> None:
            mark_sent()

        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(headers_sent)
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive_expiry,
            ssl=httpx.create_ssl_context(trust_env=False),  # certifi's bundle, as httpx's own transport
        )
        self._session = aiohttp.ClientSession(connector=connector, trace_configs=[trace], auto_decompress=False)
        return self._session

    def _url(self, url: httpx.URL) -> URL:
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) > 1024:  # per-call URLs (Gemini's model in the path): keep it bounded
                self._urls.clear()
            parsed = self._urls[text] = URL(text, encoded=True)
        return parsed

    def _timeout(self, timeouts: dict[str, Any]) -> aiohttp.ClientTimeout:
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open_session()
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        try:
            response = await session.request(
                request.method, self._url(request.url), headers=headers, data=request.content or None,
                allow_redirects=False, compress=False, timeout=self._timeout(request.extensions.get("timeout", {})),
            )
        except aiohttp.ClientError as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _Body(httpx.AsyncByteStream):
    """The response body as its pieces arrive; the connection goes back to the pool when it ends."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                piece = await content.readany()
                if not piece:
                    return
                yield piece
        except aiohttp.ClientError as exc:
            raise _httpx_error(exc) from exc

    async def aclose(self) -> None:
        response = self._response
        if response.content.is_eof():
            response.release()  # read to its end: the connection goes back to the pool
        else:
            response.close()  # cut short (a client gone, an error): the upstream should stop working
