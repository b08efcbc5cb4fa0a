"""Sending one request upstream: the steps every provider's call shares.

The request leaves through the process's pooled client; the transport says
the moment it has left (`aisix.providers.sent`), which is when the call
becomes chargeable. A refusal (any status but 2xx) is read, closed and turned
into the client's error by the provider, which knows its error bodies.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

from .errors import upstream_error
from .providers.client import upstream_failure_error
from .providers.sent import reporting_sent

if TYPE_CHECKING:
    from .call import Call
    from .providers.base import Provider

# A non-streamed answer is held in memory to read its usage: beyond this it is refused (502).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


async def send(client: httpx.AsyncClient, call: "Call", request: httpx.Request) -> httpx.Response:
    """Send ``request``; the response whatever its status (the body not read yet)."""
    call.response_headers["x-aisix-overhead-ms"] = f"{(time.perf_counter() - call.started) * 1000:.2f}"
    # Set by the transport the moment the request has left: from then on a client that
    # leaves while the upstream thinks is charged; before it (cancelled while
    # connecting) nothing is.
    call.upstream_took_call = False
    try:
        with reporting_sent(functools.partial(setattr, call, "upstream_took_call", True)):
            response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise upstream_failure_error(
            exc,
            f"The upstream for '{call.model_name}' did not answer in time.",
            f"The upstream for '{call.model_name}' could not be reached",
        ) from None
    call.upstream_took_call = True  # it answered: it saw the call
    return response


async def open_ok(client: httpx.AsyncClient, call: "Call", provider: "Provider", request: httpx.Request) -> httpx.Response:
    """Send ``request`` (prepared by the provider); return the response once it is 2xx, else raise its error."""
    response = await send(client, call, await provider.prepare(request))
    if 200 <= response.status_code < 300:
        return response
    call.upstream_took_call = False  # refused: the upstream did no work
    body = await read_and_close(response)
    raise provider.error(response.status_code, response.headers, body)


def body_pieces(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response body as its pieces arrive.

    Straight from the transport unless the upstream compressed it: httpx's
    decoding and re-chunking layers only copy an identity body, at a few µs
    per piece (per event of a stream).
    """
    if "content-encoding" in response.headers:
        return response.aiter_bytes()
    return response.stream.__aiter__()  # type: ignore[union-attr]


async def read_limited(response: httpx.Response, limit: int | None = None) -> bytes:
    """The response body, or `upstream_error` (502) once it passes ``limit`` (default `MAX_ANSWER_BYTES`)."""
    limit = MAX_ANSWER_BYTES if limit is None else limit
    pieces: list[bytes] = []
    size = 0
    try:
        async for piece in body_pieces(response):
            size += len(piece)
            if size > limit:
                raise upstream_error(f"The upstream's answer is larger than the gateway relays ({limit} bytes).")
            pieces.append(piece)
    except httpx.HTTPError as exc:
        raise upstream_failure_error(
            exc, "The upstream did not finish its answer in time.", "The upstream answer was cut off"
        ) from None
    return b"".join(pieces)


async def read_and_close(response: httpx.Response) -> bytes:
    """What an upstream refusal said (empty if it could not be read), the response closed."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


async def read_answer(response: httpx.Response) -> bytes:
    """A complete answer's body, the response closed."""
    try:
        return await read_limited(response)
    finally:
        await response.aclose()
