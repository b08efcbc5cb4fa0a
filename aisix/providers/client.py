"""The one pooled upstream client, shared by every call in the process."""

from __future__ import annotations

import errno
import logging
import socket
import ssl

import httpx

from ..errors import GatewayError, upstream_error, upstream_timeout
from .sent import mark_sent


def make_upstream_client(transport: str = "aiohttp", max_connections: int = 1000) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the chosen transport; every one reports when a request has left.

    * ``aiohttp`` (local server): httpx's API and errors over aiohttp's pool.
      httpx's own transport (httpcore + anyio + h11) spends most of a relay's
      CPU (see README, "Performance").
    * ``lean`` (Lambda): `aisix.providers.transport`, asyncio + h11. One
      instance serves one call at a time, aiohttp's import would cost ~150 ms
      of every cold start, and httpcore ~130 µs per paced chunk.
    * ``httpx``: httpx's own transport, for comparison.

    ``max_connections`` caps concurrent upstream calls (aiohttp, httpx); a call
    beyond it waits for a free connection (bounded by its model's time-out).
    """
    # httpx logs every request at INFO: a formatted line per call nobody asked for.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
    if transport == "lean":
        from .transport import LeanTransport

        return httpx.AsyncClient(transport=LeanTransport(), trust_env=False)
    if transport == "aiohttp":
        return httpx.AsyncClient(transport=_aiohttp_transport(limits), trust_env=False)
    return httpx.AsyncClient(limits=limits, trust_env=False, event_hooks={"request": [_trace_sent]})


def _aiohttp_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp's transport over a session whose trace hook reports the request headers sent."""
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    async def headers_sent(*_: object) -> None:
        mark_sent()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_sent)
    ssl_context = httpx.create_ssl_context(trust_env=False)

    def session() -> aiohttp.ClientSession:  # built on first use, inside the running loop
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry, ssl=ssl_context
        )
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace])

    return AiohttpTransport(limits=limits, client=session)


async def _trace_sent(request: httpx.Request) -> None:
    """httpx's own transport: httpcore's trace extension says when the request headers are out."""

    async def trace(event: str, info: dict[str, object]) -> None:
        if event == "http11.send_request_headers.complete":
            mark_sent()

    request.extensions["trace"] = trace


def is_timeout(exc: Exception) -> bool:
    """Whether an upstream failure was a time-out (504) rather than a broken connection (502).

    httpx-aiohttp 0.2 maps every ``aiohttp.ClientConnectionError`` (refused
    connections and server disconnects included) to ``httpx.ConnectTimeout``;
    the aiohttp exception it chains tells the truth. httpx's own transport
    chains httpcore's exceptions, whose class names are right.
    """
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    if cause is None or not type(cause).__module__.startswith("aiohttp"):
        return True
    return isinstance(cause, TimeoutError)


# aiohttp's failures to get a connection at all (refused, DNS, TLS, connect or pool time-out),
# named rather than imported: on Lambda aiohttp is never imported.
_AIOHTTP_CONNECT_FAILURES = frozenset({"ClientConnectorError", "ConnectionTimeoutError"})


def never_sent(exc: Exception) -> bool:
    """Whether a failed upstream call certainly never reached the upstream.

    True for failures to connect (refused, DNS, connect or pool time-out):
    the upstream never saw the request, so it used nothing and nothing is
    charged. Any later failure (a time-out waiting for the answer, a
    dropped connection) may come after the upstream started working.
    """
    if isinstance(exc, (httpx.ConnectError, httpx.PoolTimeout)):
        return True
    if isinstance(exc, httpx.ConnectTimeout):
        cause = exc.__cause__
        return cause is None or any(k.__name__ in _AIOHTTP_CONNECT_FAILURES for k in type(cause).__mro__)
    return False


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

    The class alone misleads: httpx-aiohttp raises ``httpx.ConnectTimeout`` for a
    refused connection. The OS error at the bottom of the chain tells the truth.
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
