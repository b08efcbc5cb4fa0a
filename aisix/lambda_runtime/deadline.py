"""The deadline safety net: cancel the app shortly before Lambda would kill the process.

The app is expected to finish on its own before `deadline_ms` (the gateway's relay reads
it from the scope). This is the backstop: cancelling with a margin left lets the runtime
still end the response cleanly, instead of Lambda cutting it off mid-chunk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger("aisix.lambda_runtime")

DEFAULT_MARGIN_MS = 500


def margin_ms() -> int:
    """`AISIX_LAMBDA_DEADLINE_MARGIN_MS`: how long before the deadline to cancel (default 500)."""
    return int(os.environ.get("AISIX_LAMBDA_DEADLINE_MARGIN_MS") or DEFAULT_MARGIN_MS)


async def run_until(
    coro: Coroutine[Any, Any, None], cancel_at: float, grace: float
) -> tuple[bool, BaseException | None]:
    """Run `coro` as a task, cancelling it at `cancel_at` (epoch seconds).

    Returns (timed_out, error). After cancelling, waits at most `grace` seconds for the
    task to unwind. If our own caller is cancelled (SIGTERM), the task is cancelled too.
    """
    task = asyncio.ensure_future(coro)
    timed_out = False
    try:
        done, _ = await asyncio.wait({task}, timeout=max(cancel_at - time.time(), 0.0))
        if not done:
            timed_out = True
            task.cancel()
            await asyncio.wait({task}, timeout=grace)
    finally:
        if not task.done():
            task.cancel()
    if not task.done():
        logger.error("The app ignored cancellation; its task is left running")
        return timed_out, None
    if task.cancelled():
        return timed_out, None if timed_out else asyncio.CancelledError()
    return timed_out, task.exception()


def cancel_at(deadline_ms: int, margin: int) -> float:
    """Epoch seconds at which the safety net cancels the app."""
    return (deadline_ms - margin) / 1000
