"""The moment an upstream request has left: the line between "never sent" and "charged".

A call cancelled before its request left (a client gone, a deadline reached
while connecting) cost the upstream nothing and is charged nothing; once the
request is out, the upstream may be working on it. The gateway cannot see
inside the transport, so the transport says when (`mark_sent`), into a
callback the gateway sets around each send (`reporting_sent`). A context
variable carries it because the transports' own hooks (aiohttp's trace
callbacks) are shared by every call and run in the calling task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_on_sent: ContextVar[Callable[[], None] | None] = ContextVar("aisix_request_sent", default=None)


def mark_sent() -> None:
    """Called by a transport once the request is written."""
    callback = _on_sent.get()
    if callback is not None:
        callback()


@contextmanager
def reporting_sent(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` when the request sent inside this block has left."""
    token = _on_sent.set(callback)
    try:
        yield
    finally:
        _on_sent.reset(token)
