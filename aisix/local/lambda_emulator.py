"""A loopback Lambda: the runtime API and Extensions API (here) and a function URL front door.

Used by the tests and by `python -m aisix.local.lambda_emulator`, which shows the real
streaming code path with `curl -N` and no AWS or Docker. AWS's own Runtime Interface
Emulator accepts the streaming protocol but buffers the response, so it proves the
bytes, never the timing; this one records, per invocation, every byte the runtime sent,
each body chunk with its arrival time (`time.monotonic()`), and the trailers.

Why not uvicorn: this server is the *peer* of the code under test. It has to see the
request exactly as the runtime wrote it (chunk boundaries, trailers, raw bytes) and
answer as Lambda's Go server does; an ASGI server hides all of that. So it is asyncio
streams plus h11, which reports chunk boundaries and trailers as it parses them.

Dev tooling: it lives in `aisix/local/`, outside what Lambda ships, and imports nothing
from `aisix.lambda_runtime` (it is that package's oracle). Imports go one way:
this module -> `function_url` -> `lambda_invocation` -> `lambda_wire`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import h11

from .function_url import FunctionURL
from .lambda_extensions import Extension, ExtensionsAPI
from .lambda_invocation import RECORD_LIMIT, Chunk, Invocation, Pipe
from .lambda_wire import (
    ERROR_BODY,
    ERROR_TYPE,
    ERROR_TYPE_PATTERN,
    MAX_BUFFERED,
    MAX_TRAILER_SECTION,
    OK,
    RESPONSE_MODE,
    RUNTIME,
    Exchange,
    api_error,
    request_header,
    unless_hangup,
)

__all__ = [
    "ERROR_TYPE_PATTERN",
    "Chunk",
    "EmulatorThread",
    "Extension",
    "Invocation",
    "RuntimeAPIEmulator",
    "lambda_environment",
    "main",
]

T = TypeVar("T")


class RuntimeAPIEmulator:
    """The runtime API on loopback: queue events with `invoke()`, read the answers off the records."""

    def __init__(
        self,
        *,
        function_name: str = "aisix-local",
        default_timeout_ms: int = 900_000,
        history: int | None = None,
        external_extensions: frozenset[str] = frozenset(),
        share: RuntimeAPIEmulator | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.default_timeout_ms = default_timeout_ms
        self.history = history  # finished invocations to keep (None: all, as tests want)
        self.init_errors: list[dict[str, Any]] = []
        self.restores = 0
        self.address = ""
        # One execution environment: its own extensions and init; `share` makes it another
        # warm instance taking events from the same queue (`--concurrency`).
        self.extensions = ExtensionsAPI(function_name=function_name, external=external_extensions)
        self.invocations: dict[str, Invocation] = share.invocations if share else {}
        self._pending: asyncio.Queue[Invocation] = share._pending if share else asyncio.Queue()
        self._streams: dict[str, asyncio.StreamWriter] = share._streams if share else {}
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def registered_extensions(self) -> list[Extension]:
        return list(self.extensions.extensions.values())

    @property
    def held_bytes(self) -> int:
        """What unfinished invocations hold in this process now (records, pipes, partial chunks)."""
        return sum(inv.held for inv in list(self.invocations.values()) if inv.outcome is None)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{bound_host}:{bound_port}"
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()
            await self._server.wait_closed()
            if self._handlers:  # let each connection's handler unwind before the loop stops
                await asyncio.wait(list(self._handlers), timeout=5)

    def invoke(
        self,
        event: dict[str, Any],
        *,
        timeout_ms: int | None = None,
        request_id: str | None = None,
        break_after_chunks: int | None = None,
        relay: bool = False,
    ) -> Invocation:
        """Queue an event for the runtime's next `/invocation/next`.

        With `relay`, the body is meant for an HTTP client reading `invocation.pipe`: at most
        `RECORD_LIMIT` bytes of it are recorded, and the pipe's back-pressure applies.
        """
        invocation = Invocation(
            request_id=request_id or str(uuid.uuid4()),
            event=event,
            timeout_ms=timeout_ms or self.default_timeout_ms,
            break_after_chunks=break_after_chunks,
            record_limit=RECORD_LIMIT if relay else None,
            pipe=Pipe() if relay else None,
        )
        self.invocations[invocation.request_id] = invocation
        self._pending.put_nowait(invocation)
        if self.history is not None:
            finished = [rid for rid, inv in self.invocations.items() if inv.outcome is not None]
            for rid in finished[: max(len(finished) - self.history, 0)]:
                del self.invocations[rid]
        return invocation

    def sever(self, invocation: Invocation) -> None:
        """Drop the connection carrying this invocation's streamed response."""
        writer = self._streams.get(invocation.request_id)
        if writer is not None:
            writer.transport.abort()

    def new_environment(self) -> None:
        """A fresh execution environment (after a crash): init again, no extension registered."""
        self.extensions = ExtensionsAPI(function_name=self.function_name, external=self.extensions.external)

    def spin_down(self, deadline_ms: int, reason: str = "spindown") -> None:
        """Tell the extensions subscribed to SHUTDOWN (the runtime gets SIGTERM from the caller)."""
        self.extensions.shutdown(reason, deadline_ms)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                exchange = Exchange(conn, reader, writer)
                request = await exchange.next_event()
                if not isinstance(request, h11.Request):
                    return
                if not await self._route(request, exchange):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        except asyncio.CancelledError:  # the server is closing; nothing left to answer
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _route(self, request: h11.Request, ex: Exchange) -> bool:
        method, target = request.method.decode(), request.target.decode()
        if method == "GET" and target == f"{RUNTIME}/invocation/next":
            return await self._next(ex)
        if method == "GET" and target == f"{RUNTIME}/restore/next":
            await ex.read_body()
            self.extensions.close_registration()  # the runtime is ready: init is over
            self.restores += 1
            return await ex.respond(200, {})
        if method == "POST" and target == f"{RUNTIME}/init/error":
            body = await ex.read_body()
            kind = request_header(request, ERROR_TYPE)
            self.init_errors.append({"type": _error_type(kind), "body": _json(body or b"")})
            return await ex.respond(202, OK)
        match = re.fullmatch(rf"{RUNTIME}/invocation/([^/]+)/(response|error)", target)
        if method == "POST" and match:
            return await self._result(request, ex, match[1], match[2])
        handled = await self.extensions.route(request, ex)
        if handled is not None:
            return handled
        return await ex.respond(404, api_error("Not found", "NotFound"), close=True)

    async def _next(self, ex: Exchange) -> bool:
        await ex.read_body()
        self.extensions.close_registration()

        async def take() -> Invocation:
            await self.extensions.wait_ready()  # init ends when every extension called its /next
            return await self._pending.get()

        getter, left = await unless_hangup(ex.reader, take())
        if getter.cancelled():
            return False
        invocation: Invocation = getter.result()
        if left:
            self._pending.put_nowait(invocation)
            return False
        invocation.dispatched = True
        invocation.deadline_ms = int(time.time() * 1000) + invocation.timeout_ms
        trace_id = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"
        headers = [
            ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", self.function_arn),
            ("Lambda-Runtime-Trace-Id", trace_id),
        ]
        self.extensions.invoke(invocation.request_id, invocation.deadline_ms, self.function_arn, trace_id)
        return await ex.respond(200, invocation.event, headers=headers)

    async def _result(self, request: h11.Request, ex: Exchange, request_id: str, kind: str) -> bool:
        invocation = self.invocations.get(request_id)
        if invocation is None or not invocation.dispatched:
            return await ex.respond(400, api_error("Invalid request ID", "InvalidRequestID"), close=True)
        if invocation.outcome is not None:
            return await ex.respond(403, api_error("Invalid state transition", "InvalidStateTransition"), close=True)
        invocation.headers = [(n.decode(), v.decode("latin-1")) for n, v in request.headers.raw_items()]
        if kind == "error":
            body = await ex.read_body() or b""
            error = {"type": _error_type(invocation.header(ERROR_TYPE)), "body": _json(body)}
            self._settle(invocation, "error", ex, body=body, error=error)
            return await ex.respond(202, OK)
        mode = invocation.header(RESPONSE_MODE)
        if mode is not None and mode != "streaming":
            error = {"type": "InvalidFunctionResponseMode", "body": mode}
            self._settle(invocation, "rejected", ex, error=error, answered=400)
            return await ex.respond(
                400, api_error(f"Invalid response mode {mode!r}", "InvalidFunctionResponseMode"), close=True
            )
        if mode == "streaming":
            return await self._stream(invocation, ex)
        result = await ex.read_body(limit=MAX_BUFFERED)
        if result is None:  # too large: the runtime may still report an /error
            invocation.answered = 413
            return await ex.respond(413, api_error("Response payload too large", "RequestEntityTooLarge"), close=True)
        self._settle(invocation, "response", ex, body=result)
        return await ex.respond(202, OK)

    async def _stream(self, invocation: Invocation, ex: Exchange) -> bool:
        """Read the streamed body chunk by chunk, passing each piece on as it arrives.

        With a pipe (a client reads it), a full pipe stops this loop reading the runtime's
        connection, so its writes stall; with `record_limit`, the record stops growing.
        """
        self._streams[invocation.request_id] = ex.writer
        ex.keep_raw = invocation.record_limit
        pending = bytearray()  # the chunk in progress, while it is being recorded
        recording = True
        recorded = 0
        limit = invocation.record_limit
        try:
            while True:
                event = await ex.next_event()
                if isinstance(event, h11.Data):
                    invocation.bytes_received += len(event.data)
                    if recording:
                        pending += event.data
                        if limit is not None and recorded + len(pending) > limit:
                            recording, invocation.complete = False, False
                            pending.clear()
                    self._account(invocation, ex, recorded + len(pending))
                    if invocation.pipe is not None:
                        await invocation.pipe.put(event.data)
                    if not event.chunk_end:
                        continue
                    invocation.chunk_count += 1
                    invocation.last_chunk_at = time.monotonic()
                    if recording:
                        invocation.chunks.append(Chunk(invocation.last_chunk_at, bytes(pending)))
                        recorded += len(pending)
                        pending.clear()
                    if (
                        invocation.break_after_chunks is not None
                        and invocation.chunk_count >= invocation.break_after_chunks
                    ):
                        ex.writer.transport.abort()
                        self._settle(invocation, "broken", ex)
                        return False
                elif isinstance(event, h11.EndOfMessage):
                    invocation.trailers = {n.decode(): v.decode("latin-1") for n, v in event.headers.raw_items()}
                    break
                else:
                    raise ConnectionError("connection closed mid-stream")
        except (ConnectionError, h11.ProtocolError):
            self._settle(invocation, "broken", ex)
            return False
        finally:
            self._streams.pop(invocation.request_id, None)
        error = self._trailer_error(invocation, bytes(ex.tail))
        self._settle(invocation, "error" if error else "response", ex, error=error)
        return await ex.respond(202, OK)

    @staticmethod
    def _account(invocation: Invocation, ex: Exchange, record_bytes: int) -> None:
        pipe = invocation.pipe.held if invocation.pipe is not None else 0
        invocation.held = record_bytes + len(ex.raw) + len(ex.tail) + pipe
        invocation.peak_held = max(invocation.peak_held, invocation.held)

    @staticmethod
    def _trailer_error(invocation: Invocation, tail: bytes) -> dict[str, Any] | None:
        section = len(tail) - (tail.rfind(b"\r\n0\r\n") + len(b"\r\n0\r\n"))
        if section >= MAX_TRAILER_SECTION:
            return {"type": "Runtime.TruncatedResponse", "body": None}
        trailers = {k.lower(): v for k, v in invocation.trailers.items()}
        if ERROR_TYPE.lower() not in trailers:
            return None
        return {
            "type": _error_type(trailers[ERROR_TYPE.lower()]),
            "body": _b64_json(trailers.get(ERROR_BODY.lower(), "")),
        }

    @staticmethod
    def _settle(
        invocation: Invocation,
        outcome: str,
        ex: Exchange,
        *,
        body: bytes | None = None,
        error: dict[str, Any] | None = None,
        answered: int = 202,
    ) -> None:
        invocation.outcome = outcome
        invocation.raw = bytes(ex.raw)
        invocation.complete = invocation.complete and ex.raw_complete
        invocation.body = body if body is not None else b"".join(c.data for c in invocation.chunks)
        invocation.error = error
        invocation.answered = None if outcome == "broken" else answered
        invocation.held = 0
        invocation.finished.set()
        if invocation.pipe is not None:
            invocation.pipe.close()


def _error_type(value: str | None) -> str:
    """What Lambda records: the given type if well-formed, else Runtime.Unknown."""
    return value if value and ERROR_TYPE_PATTERN.fullmatch(value) else "Runtime.Unknown"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("latin-1")


def _b64_json(value: str) -> Any:
    try:
        return json.loads(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error):
        return value


def lambda_environment(address: str, *, function_name: str = "aisix-local", memory_mb: int = 1024) -> dict[str, str]:
    """The variables Lambda sets for a runtime process, pointed at `address`."""
    return {
        "AWS_LAMBDA_RUNTIME_API": address,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
    }


class EmulatorThread:
    """The emulator (and optionally the function URL front door) on a background event loop,
    for synchronous code such as pytest tests. `invoke()` is safe to call from any thread."""

    def __init__(self, *, function_url: bool = False, **options: Any) -> None:
        self._want_url = function_url
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lambda-emulator", daemon=True)
        self.emulator: RuntimeAPIEmulator
        self.url = ""

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        self.call(self._create)
        self._run(self.emulator.start())
        if self._want_url:
            front = self.call(lambda: FunctionURL(self.emulator, **self._options))
            host, port = self._run(front.start("127.0.0.1", 0))
            self.url = f"http://{host}:{port}"
            self._front = front
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._want_url:
            self._run(self._front.close())
        self._run(self.emulator.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def address(self) -> str:
        return self.emulator.address

    def invoke(self, event: dict[str, Any], **options: Any) -> Invocation:
        return self.call(lambda: self.emulator.invoke(event, **options))

    def shutdown(self, process: subprocess.Popen[Any], grace: float = 0.5) -> bool:
        """Spin the environment down as Lambda does; True if the runtime exited by itself.

        With an extension registered, the runtime gets SIGTERM and `grace` seconds (Lambda:
        500 ms with an internal extension, 300 ms beside external ones), then SIGKILL;
        extensions subscribed to SHUTDOWN get the event. With none registered: SIGKILL at once.
        """
        if process.poll() is not None:
            return True
        if not self.call(lambda: self.emulator.registered_extensions):
            process.kill()
            process.wait()
            return False
        deadline_ms = int((time.time() + grace) * 1000)
        process.send_signal(signal.SIGTERM)
        self.call(lambda: self.emulator.spin_down(deadline_ms))
        try:
            process.wait(grace)
            return True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop thread and return its result."""

        async def wrapper() -> T:
            return fn()

        return self._run(wrapper())

    def _create(self) -> None:
        emulator_options = {k: self._options.pop(k) for k in ("external_extensions",) if k in self._options}
        self.emulator = RuntimeAPIEmulator(**emulator_options)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)


# --- `python -m aisix.local.lambda_emulator` ---------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aisix.local.lambda_emulator",
        description="Serve an ASGI app through the real Lambda streaming runtime, behind a local function URL.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="front door address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3001, help="front door port (default 3001)")
    parser.add_argument("--app", default="handler:app", help="module:attr of the ASGI app (default handler:app)")
    parser.add_argument("--timeout", type=int, default=900, help="function timeout in seconds (default 900)")
    parser.add_argument("--concurrency", type=int, default=1, help="runtime processes, like warm instances (default 1)")
    parser.add_argument(
        "--propagate-disconnect",
        action="store_true",
        help="cut the runtime's connection when the HTTP client goes away (AWS does not)",
    )
    parser.add_argument(
        "--no-runtime",
        action="store_true",
        help="start no runtime process; run one yourself with the printed AWS_LAMBDA_RUNTIME_API",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    emulator = RuntimeAPIEmulator(default_timeout_ms=args.timeout * 1000, history=100)
    address = await emulator.start()
    front = FunctionURL(emulator, propagate_disconnect=args.propagate_disconnect)
    host, port = await front.start(args.host, args.port)
    print(f"Function URL (RESPONSE_STREAM) at http://{host}:{port}/  ·  runtime API at {address}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Each runtime process is its own execution environment (its own init and extensions),
    # taking events from the one queue behind the front door.
    environments = [emulator]
    for _ in range(0 if args.no_runtime else args.concurrency - 1):
        sibling = RuntimeAPIEmulator(default_timeout_ms=args.timeout * 1000, history=100, share=emulator)
        await sibling.start()
        environments.append(sibling)
    if args.no_runtime:
        print(f"export AWS_LAMBDA_RUNTIME_API={address}", flush=True)
        supervisors = []
    else:
        supervisors = [asyncio.ensure_future(_supervise(args.app, env, stop)) for env in environments]
    await stop.wait()
    await asyncio.gather(*supervisors)
    await front.close()
    for env in environments:
        await env.close()


async def _supervise(app: str, environment: RuntimeAPIEmulator, stop: asyncio.Event) -> None:
    """Keep one runtime process alive, restarting it like Lambda does after a crash."""
    env = {**os.environ, **lambda_environment(environment.address)}
    while not stop.is_set():
        environment.new_environment()
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "aisix.lambda_runtime", app, env=env)
        waiter = asyncio.ensure_future(process.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            stopper.cancel()
            if process.returncode is None:
                # SIGTERM: the runtime runs the app's lifespan shutdown (more time than Lambda gives).
                environment.spin_down(int(time.time() * 1000) + 5000)
                process.terminate()
                try:
                    await asyncio.wait_for(waiter, 5)
                except TimeoutError:
                    process.kill()
            return
        stopper.cancel()
        print(f"runtime exited with {process.returncode}; restarting in 1 s", file=sys.stderr, flush=True)
        await asyncio.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
