"""The invocation loop: one process, one event loop, many invocations in a row.

Lifespan startup runs once before the first `/invocation/next`; each event then gets
a fresh request cycle, streamed or buffered, and nothing of it outlives the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import signal
from typing import Any

from mangum.protocols.http import HTTPCycle
from mangum.types import ASGI, Message, Receive, Scope, Send

from .cycle import TIMEOUT_ERROR, StreamingCycle
from .deadline import cancel_at, margin_ms, run_until
from .events import HTTPRequest, UnsupportedEvent, to_request
from .lifespan import Lifespan, LifespanFailure
from .runtime_api import Invocation, RuntimeAPI

logger = logging.getLogger("aisix.lambda_runtime")

TRUTHY = frozenset({"1", "true", "yes", "on"})
# Lambda answers 413 to a buffered result above 6 MiB; a streamed one may be larger.
PAYLOAD_TOO_LARGE = 413


SHUTDOWN_EXTENSION = "aisix-shutdown"


class Runtime:
    def __init__(self, app: ASGI, api: RuntimeAPI, *, stream_rest_api: bool, margin: int) -> None:
        self.app = app
        self.api = api
        self.stream_rest_api = stream_rest_api
        self.margin = margin
        self.lifespan = Lifespan(app)

    async def serve(self) -> bool:
        """Start the app, then answer events until cancelled (SIGTERM). False if startup failed."""
        try:
            await self.lifespan.startup()
        except LifespanFailure as exc:
            await self.api.post_init_error("Runtime.StartupFailed", str(exc), "LifespanFailure")
            return False
        # Everything built so far (modules, the app, its clients) lives as long as the
        # process: move it out of the collector's reach, so that full collections stay
        # short and do not stall a stream (they showed as 1-14 ms gaps between chunks).
        gc.collect()
        gc.freeze()
        shutdown_signal = await self._ask_for_sigterm()
        try:
            if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
                # Init ends at this call; Lambda snapshots here and resumes us on restore.
                await self.api.restore_next()
            while True:
                invocation = await self.api.next_invocation()
                try:
                    await self.handle(invocation)
                except Exception as exc:  # a bug here must not take the warm process down
                    logger.exception("Runtime failure while handling %s", invocation.request_id)
                    with contextlib.suppress(Exception):
                        await self.api.post_error(invocation, "Runtime.Unhandled", str(exc), type(exc).__name__)
        finally:
            if shutdown_signal is not None:
                shutdown_signal.cancel()
            await self.lifespan.shutdown()

    async def _ask_for_sigterm(self) -> "asyncio.Task[None] | None":
        """Register an internal extension, so that Lambda sends SIGTERM before it ends the
        environment and the app's lifespan shutdown runs (it writes what it still holds).

        Its `/event/next` is left waiting in the background: that call is how an
        extension says it is ready, and it never returns (no events were asked for).
        Where the runtime API has no extensions API, the runtime goes on without.
        """
        try:
            identifier = await self.api.register_extension(SHUTDOWN_EXTENSION)
        except (ConnectionError, OSError) as exc:
            logger.warning("No SIGTERM at shutdown: the extension could not be registered (%s)", exc)
            return None
        return asyncio.ensure_future(self._wait_as_extension(identifier))

    async def _wait_as_extension(self, identifier: str) -> None:
        """Keep the extension's `/event/next` open; call it again if its connection breaks
        (a SnapStart restore breaks it, and Lambda waits for every extension's call)."""
        while True:
            try:
                await self.api.extension_next(identifier)
            except (ConnectionError, OSError) as exc:
                logger.info("The shutdown extension's event wait ended (%s); waiting again", exc)
                await asyncio.sleep(1.0)

    async def handle(self, invocation: Invocation) -> None:
        if invocation.trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id  # what the AWS SDKs and X-Ray read
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            request = to_request(invocation, stream_rest_api=self.stream_rest_api)
        except UnsupportedEvent as exc:
            await self.api.post_error(invocation, "Runtime.UnsupportedEvent", str(exc), "UnsupportedEvent")
            return
        if self.lifespan.supported:
            request.scope["state"] = self.lifespan.state.copy()
        if request.streaming:
            await self._stream(invocation, request)
        else:
            await self._buffer(invocation, request)

    @property
    def grace(self) -> float:
        """Seconds a cancelled app gets to unwind: half the margin; the rest is for answering."""
        return self.margin / 2000

    async def _stream(self, invocation: Invocation, request: HTTPRequest) -> None:
        cycle = StreamingCycle(request.scope, request.body, functools.partial(self.api.open_stream, invocation))
        await cycle.run(self.app, cancel_at(invocation.deadline_ms, self.margin), self.grace)

    async def _buffer(self, invocation: Invocation, request: HTTPRequest) -> None:
        """Answer exactly as `Mangum(app)` would, on the loop we already run."""
        cycle = HTTPCycle(request.scope, request.body)
        answered = False

        async def send(message: Message) -> None:
            nonlocal answered
            await cycle.send(message)
            answered = answered or (message["type"] == "http.response.body" and not message.get("more_body"))

        async def app(scope: Scope, receive: Receive, _: Send) -> None:
            await self.app(scope, receive, send)

        # HTTPCycle.run turns app errors into a plain-text 500 itself; a cut-off at the
        # deadline before the app answered gets the same JSON error as a streamed one.
        timed_out, _ = await run_until(
            cycle.run(app), cancel_at(invocation.deadline_ms, self.margin), self.grace
        )
        if timed_out and not answered:
            logger.error("Deadline safety net: cancelled the app before Lambda's deadline")
            cycle.status, cycle.headers = 504, [(b"content-type", b"application/json")]
            cycle.body = json.dumps(TIMEOUT_ERROR).encode()
        try:
            result = request.handler({"status": cycle.status, "headers": cycle.headers, "body": cycle.body})
        except AttributeError:
            await self.api.post_error(
                invocation, "Function.IncompleteResponse", "The app did not complete a response", "IncompleteResponse"
            )
            return
        status = await self.api.post_response(invocation, json.dumps(result).encode())
        if status == PAYLOAD_TOO_LARGE:
            await self.api.post_error(
                invocation, "Function.ResponseSizeTooLarge", "Response exceeds 6 MB", "ResponseSizeTooLarge"
            )
        elif status >= 300:
            logger.error("Runtime API rejected the buffered response with %s", status)


def run(app: ASGI, *, runtime_api: str | None = None) -> None:
    """Serve `app` as this Lambda function's runtime until SIGTERM.

    Settings come from the environment: `AWS_LAMBDA_RUNTIME_API` (set by Lambda),
    `AISIX_STREAM_REST_API` (stream REST API v1 events) and
    `AISIX_LAMBDA_DEADLINE_MARGIN_MS` (safety-net margin, default 500).
    """
    address = runtime_api or os.environ["AWS_LAMBDA_RUNTIME_API"]
    stream_rest_api = os.environ.get("AISIX_STREAM_REST_API", "").strip().lower() in TRUTHY
    runtime = Runtime(app, RuntimeAPI(address), stream_rest_api=stream_rest_api, margin=margin_ms())
    if not _event_loop_runner()(_main(runtime)):
        raise SystemExit(1)


def _event_loop_runner() -> Any:
    """uvloop's runner where it is installed (the package ships it), else asyncio's.

    A paced token stream wakes the loop once per event on both sockets (upstream
    read, runtime API write); uvloop's loop costs a fraction of asyncio's per wake-up
    and ~5 ms to import. `AISIX_LAMBDA_UVLOOP=0` turns it off.
    """
    if (os.environ.get("AISIX_LAMBDA_UVLOOP") or "1").strip().lower() not in TRUTHY:  # "": the default
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _main(runtime: Runtime) -> bool:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await runtime.serve()
    except asyncio.CancelledError:
        logger.info("Shutting down")
        return True
