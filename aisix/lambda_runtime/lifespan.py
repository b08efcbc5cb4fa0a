"""The app's ASGI lifespan, once per process: startup before the first event, shutdown on SIGTERM.

Mangum's `LifespanCycle` drives its own event loop (`run_until_complete`), so it cannot
run inside ours. Apps without lifespan support are tolerated: if the app raises before
it has even asked for the startup message, lifespan is treated as unsupported.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mangum.types import ASGI, Message

logger = logging.getLogger("aisix.lambda_runtime")


class LifespanFailure(Exception):
    """The app reported (or raised) a startup failure."""


class Lifespan:
    def __init__(self, app: ASGI) -> None:
        self.app = app
        self.state: dict[str, Any] = {}  # copied into each request's scope["state"]
        self.supported = True
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._asked = False
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self._task = asyncio.ensure_future(self._main())
        self._queue.put_nowait({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            raise LifespanFailure(self._failure)

    async def shutdown(self, timeout: float = 2.0) -> None:
        if self._task is None or self._task.done():
            return
        self._queue.put_nowait({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            logger.warning("Lifespan shutdown did not finish within %.1f s", timeout)
        if self._failure is not None:
            logger.error("Lifespan shutdown failed: %s", self._failure)
        if not self._task.done():
            self._task.cancel()

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if not self._asked:
                self.supported = False
                logger.info("ASGI lifespan is not supported by the app (%r); continuing without it", exc)
            elif not self._started.is_set() or not self._stopped.is_set():
                self._failure = self._failure or f"{type(exc).__name__}: {exc}"
                logger.error("Lifespan raised", exc_info=exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._started.set()
            self._stopped.set()

    async def _receive(self) -> Message:
        self._asked = True
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            self._failure = message.get("message") or kind
            (self._started if kind == "lifespan.startup.failed" else self._stopped).set()
        else:
            raise RuntimeError(f"Unexpected lifespan message {kind!r}")
