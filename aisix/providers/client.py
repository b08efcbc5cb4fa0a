"""The one pooled upstream client, shared by every call in the process."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from typing import Any

import httpx

from ..errors import GatewayError, upstream_error, upstream_timeout
from .sent import mark_sent


class UpstreamClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose ``send`` goes straight to its transport.

    An upstream call uses none of what ``AsyncClient.send`` wraps around the
    transport: auth flows, redirects (an API that redirects a POST is
    misconfigured), a cookie jar (each answer's cookies parsed through
    ``http.cookiejar``: ~120 µs a call), event hooks and an INFO log line.
    Requests are still built by httpx (``build_request``, `Provider.post`) and
    answers are ``httpx.Response`` objects, so nothing else changes.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(transport=transport, trust_env=False)
        self._upstream_transport = transport

    async def send(self, request: httpx.Request, *, stream: bool = False, **_: Any) -> httpx.Response:  # type: ignore[override]
        response = await self._upstream_transport.handle_async_request(request)
        response.request = request
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response


def make_upstream_client(transport: str = "aiohttp", max_connections: int = 1000) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the chosen transport; every one reports when a request has left.

    * ``aiohttp`` (local server): `aisix.providers.aiohttp_transport`, httpx's
      API and errors over aiohttp's pool. httpx's own transport (httpcore +
      anyio + h11) spends most of a relay's CPU (see README, "Performance").
    * ``lean`` (Lambda): `aisix.providers.transport`, asyncio + h11. One
      instance serves one call at a time, aiohttp's import would cost ~150 ms
      of every cold start, and httpcore ~130 µs per paced chunk.
    * ``httpx``: httpx's own transport and client, for comparison.

    ``max_connections`` caps concurrent upstream calls (aiohttp, httpx); a call
    beyond it waits for a free connection (bounded by its model's time-out).
    """
    # httpx logs every request at INFO: a formatted line per call nobody asked for.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if transport == "lean":
        from .transport import LeanTransport

        return UpstreamClient(LeanTransport())
    if transport == "aiohttp":
        from .aiohttp_transport import AiohttpTransport

        return UpstreamClient(AiohttpTransport(max_connections=max_connections))
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
    return httpx.AsyncClient(limits=limits, trust_env=False, event_hooks={"request": [_trace_sent]})


async def _trace_sent(request: httpx.Request) -> None:
    """httpx's own transport: httpcore's trace extension says when the request headers are out."""

    async def trace(event: str, info: dict[str, object]) -> None:
        if event == "http11.send_request_headers.complete":
            mark_sent()

    request.extensions["trace"] = trace


def is_timeout(exc: Exception) -> bool:
    """Whether an upstream failure was a time-out (504) rather than a broken connection (502)."""
    return isinstance(exc, httpx.TimeoutException)


def never_sent(exc: Exception) -> bool:
    """Whether a failed upstream call certainly never reached the upstream.

    True for failures to connect (refused, DNS, TLS, connect or pool time-out):
    the upstream never saw the request, so it used nothing and nothing is
    charged. Any later failure (a time-out waiting for the answer, a
    dropped connection) may come after the upstream started working.
    """
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, down to the OS error (aiohttp keeps it in ``os_error``)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        os_error = getattr(current, "os_error", None)
        current = current.__cause__ or current.__context__ or (
            os_error if isinstance(os_error, BaseException) else None
        )
    return seen


def describe_failure(exc: BaseException) -> str:
    """What went wrong, in the words a user looks for ("connection refused"), not a class name.

    The class alone is vague (``ConnectError`` is refused, DNS and TLS alike):
    the OS error at the bottom of the chain tells which.
    """
    chain = _chain(exc)
    for error in chain:
        # asyncio joins the errors of several addresses (localhost: ::1 and 127.0.0.1) into one OSError.
        if isinstance(error, ConnectionRefusedError) or (
            isinstance(error, OSError) and f"[Errno {errno.ECONNREFUSED}]" in str(error)
        ):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return "host name not found"
        if isinstance(error, ssl.SSLError):
            return "TLS failed"
        if isinstance(error, ConnectionResetError):
            return "connection reset"
    names = [type(e).__name__ for e in chain if type(e).__module__.startswith(("aiohttp", "httpx", "httpcore"))]
    return names[-1] if names else type(exc).__name__


def upstream_failure_error(exc: Exception, timed_out: str, failed: str) -> GatewayError:
    """The client's error for an httpx failure talking to the upstream: 504 if it timed out, else 502."""
    if is_timeout(exc):
        return upstream_timeout(timed_out)
    return upstream_error(f"{failed}: {describe_failure(exc)}.")
