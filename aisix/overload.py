"""Overload is an answer, not a silence: past its capacity a process refuses new calls at once.

Without a limit, a process that is full (CPU, not memory, is what runs out: see
bench/RESULTS.md) still accepts every connection; the calls past what it can serve
wait, unanswered, while every open stream slows down. `OverloadGuard` counts the
calls in flight (a stream is in flight until its last byte and its settlement) and
answers the next one with a prompt 503 and ``Retry-After`` in the caller's dialect,
so a client or a load balancer can go elsewhere or come back.

The check is one integer comparison per call; the count is given back in a
``finally``, so errors and cancellations (a client that leaves) never leak a slot.
It matters for the local/container server only: a Lambda instance serves one
invocation at a time, so there the guard is off (`Settings.max_open_calls` is 0).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from .errors import GatewayError

log = logging.getLogger("aisix")

RETRY_AFTER_SECONDS = 1
WARN_EVERY_SECONDS = 10.0


class Capacity:
    """The calls this process has open, and how many it takes (``limit`` 0: no limit)."""

    __slots__ = ("limit", "open", "refused", "_warned_at", "_refused_since_warning")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._warned_at = float("-inf")
        self._refused_since_warning = 0

    def error(self) -> GatewayError:
        return GatewayError(
            503, f"The gateway is at capacity ({self.limit} calls open in this process). Retry shortly.",
            type="server_error", code="overloaded", headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    def note_refusal(self) -> None:
        """Count a refusal; a warning at most every ``WARN_EVERY_SECONDS``, not one per call."""
        self.refused += 1
        self._refused_since_warning += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            log.warning("at capacity (AISIX_MAX_OPEN_CALLS=%d): refused %d calls with 503 since the last warning",
                        self.limit, self._refused_since_warning)
            self._warned_at = now
            self._refused_since_warning = 0


class OverloadGuard:
    """Pure ASGI: a call (any POST) past ``capacity.limit`` open ones gets ``refusal(scope, error)``.

    GET routes (health, models, the OpenAPI document) are cheap and never refused:
    a health check must still say the process is alive while it is full.
    """

    def __init__(self, app: Any, capacity: Capacity, refusal: Callable[[dict[str, Any], GatewayError], Any]) -> None:
        self.app = app
        self.capacity = capacity
        self.refusal = refusal

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        capacity = self.capacity
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if capacity.open >= capacity.limit:
            capacity.note_refusal()
            await self.refusal(scope, capacity.error())(scope, receive, send)
            return
        capacity.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            capacity.open -= 1
