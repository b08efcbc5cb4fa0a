"""What cuts a call short: the client leaving, or the platform's deadline.

Both the non-streamed call (`aisix.lifecycle`) and the stream relay
(`aisix.streaming.relay`) run their upstream work in the request's own task
and let a `Cutoff` cancel that task, saying why. After the request body has
been read, the next ``receive`` message is the disconnect (uvicorn, Mangum
and the Lambda runtime all block until then): one watcher task waits for it,
and a loop timer stands for the deadline. Plain asyncio rather than anyio
scopes and extra tasks: less CPU and memory per call (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

CLIENT_LEFT = "client left"
DEADLINE = "deadline"


class Cutoff:
    """Cancels the task that made it when the client leaves or ``seconds`` pass; ``why`` says which.

    ``on_client_left`` runs at once when the disconnect is seen, before the
    cancellation reaches the task. Call `close` when the work is over.
    """

    __slots__ = ("why", "_task", "_watcher", "_timer", "_on_client_left")

    def __init__(self, receive: Any, seconds: float, on_client_left: Callable[[], None] | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self.why: str | None = None
        self._task = task
        self._on_client_left = on_client_left
        self._watcher = loop.create_task(self._watch(receive))
        self._timer = loop.call_later(seconds, self._stop, DEADLINE) if seconds != math.inf else None

    def caught(self) -> bool:
        """After a ``CancelledError``: True if this cut the task short (the cancellation is taken
        back, the task goes on), False if it came from outside and must propagate."""
        if self.why is None:
            return False
        self._task.uncancel()
        return True

    def close(self) -> None:
        self._watcher.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def _stop(self, why: str) -> None:
        if self.why is None:
            self.why = why
            self._task.cancel()

    async def _watch(self, receive: Any) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a channel that fails can tell us nothing more: the client is as good as gone
            pass
        if self._on_client_left is not None:
            self._on_client_left()
        self._stop(CLIENT_LEFT)
