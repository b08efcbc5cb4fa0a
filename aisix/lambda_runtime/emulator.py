"""A loopback Lambda: the runtime API (here) and a function URL front door (`function_url.py`).

Used by the tests and by `python -m aisix.lambda_runtime.emulator`, which shows the real
streaming code path with `curl -N` and no AWS or Docker. AWS's own Runtime Interface
Emulator accepts the streaming protocol but buffers the response, so it proves the
bytes, never the timing; this one records, per invocation, every byte the runtime sent,
each body chunk with its arrival time (`time.monotonic()`), and the trailers.

Why not uvicorn: this server is the *peer* of the code under test. It has to see the
request exactly as the runtime wrote it (chunk boundaries, trailers, raw bytes) and
answer as Lambda's Go server does; an ASGI server hides all of that. So it is asyncio
streams plus h11, which reports chunk boundaries and trailers as it parses them.
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
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

import h11

from .stream import DELIMITER, ERROR_BODY, ERROR_TYPE

RUNTIME = "/2018-06-01/runtime"
ERROR_TYPE_PATTERN = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")
MAX_BUFFERED = 6 * 1024 * 1024 + 100  # Lambda answers 413 above this
MAX_TRAILER_SECTION = 4096  # at or above: Runtime.TruncatedResponse
OK = {"status": "OK"}

T = TypeVar("T")


@dataclass
class Chunk:
    at: float  # time.monotonic() when the chunk's last byte arrived
    data: bytes


@dataclass(eq=False)
class Invocation:
    """One event, and everything the runtime sent back for it."""

    request_id: str
    event: dict[str, Any]
    timeout_ms: int
    break_after_chunks: int | None = None  # cut the runtime's connection after this many chunks
    deadline_ms: int = 0
    dispatched: bool = False
    # What the runtime sent for it (its /response or /error request).
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""
    chunks: list[Chunk] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # the buffered result, or the whole streamed body
    error: dict[str, Any] | None = None  # {"type", "body"} from /error or the error trailers
    outcome: str | None = None  # "response", "error", "rejected" or "broken"
    answered: int | None = None  # the status we answered the runtime with
    finished: threading.Event = field(default_factory=threading.Event)
    updates: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def streamed(self) -> bool:
        return self.header("Lambda-Runtime-Function-Response-Mode") == "streaming"

    @property
    def prelude(self) -> dict[str, Any]:
        head, found, _ = self.body.partition(DELIMITER)
        if not found:
            raise ValueError("no prelude delimiter in the streamed body")
        return json.loads(head)

    @property
    def payload(self) -> bytes:
        return self.body.partition(DELIMITER)[2]

    def wait(self, timeout: float = 10.0) -> Invocation:
        if not self.finished.wait(timeout):
            raise TimeoutError(f"invocation {self.request_id} not finished after {timeout} s")
        return self


class RuntimeAPIEmulator:
    """The runtime API on loopback: queue events with `invoke()`, read the answers off the records."""

    def __init__(
        self, *, function_name: str = "aisix-local", default_timeout_ms: int = 900_000, history: int | None = None
    ) -> None:
        self.function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        self.default_timeout_ms = default_timeout_ms
        self.history = history  # finished invocations to keep (None: all, as tests want)
        self.invocations: dict[str, Invocation] = {}
        self.init_errors: list[dict[str, Any]] = []
        self.restores = 0
        self.address = ""
        self._pending: asyncio.Queue[Invocation] = asyncio.Queue()
        self._streams: dict[str, asyncio.StreamWriter] = {}
        self._connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

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

    def invoke(
        self,
        event: dict[str, Any],
        *,
        timeout_ms: int | None = None,
        request_id: str | None = None,
        break_after_chunks: int | None = None,
    ) -> Invocation:
        """Queue an event for the runtime's next `/invocation/next`."""
        invocation = Invocation(
            request_id=request_id or str(uuid.uuid4()),
            event=event,
            timeout_ms=timeout_ms or self.default_timeout_ms,
            break_after_chunks=break_after_chunks,
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                exchange = _Exchange(conn, reader, writer)
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

    async def _route(self, request: h11.Request, ex: _Exchange) -> bool:
        method, target = request.method.decode(), request.target.decode()
        if method == "GET" and target == f"{RUNTIME}/invocation/next":
            return await self._next(ex)
        if method == "GET" and target == f"{RUNTIME}/restore/next":
            await ex.read_body()
            self.restores += 1
            return await ex.respond(200, {})
        if method == "POST" and target == f"{RUNTIME}/init/error":
            body = await ex.read_body()
            kind = _header(request, ERROR_TYPE)
            self.init_errors.append({"type": _error_type(kind), "body": _json(body or b"")})
            return await ex.respond(202, OK)
        match = re.fullmatch(rf"{RUNTIME}/invocation/([^/]+)/(response|error)", target)
        if method == "POST" and match:
            return await self._result(request, ex, match[1], match[2])
        return await ex.respond(404, _api_error("Not found", "NotFound"), close=True)

    async def _next(self, ex: _Exchange) -> bool:
        await ex.read_body()
        getter = asyncio.ensure_future(self._pending.get())
        hangup = asyncio.ensure_future(ex.reader.read(1))  # EOF: the runtime went away while waiting
        done, pending = await asyncio.wait({getter, hangup}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)  # a read still waiting would block the next one on this reader
        if getter not in done:
            return False
        invocation = getter.result()
        if hangup in done:
            self._pending.put_nowait(invocation)
            return False
        invocation.dispatched = True
        invocation.deadline_ms = int(time.time() * 1000) + invocation.timeout_ms
        headers = [
            ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", self.function_arn),
            ("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"),
        ]
        return await ex.respond(200, invocation.event, headers=headers)

    async def _result(self, request: h11.Request, ex: _Exchange, request_id: str, kind: str) -> bool:
        invocation = self.invocations.get(request_id)
        if invocation is None or not invocation.dispatched:
            return await ex.respond(400, _api_error("Invalid request ID", "InvalidRequestID"), close=True)
        if invocation.outcome is not None:
            return await ex.respond(403, _api_error("Invalid state transition", "InvalidStateTransition"), close=True)
        invocation.headers = [(n.decode(), v.decode("latin-1")) for n, v in request.headers.raw_items()]
        if kind == "error":
            body = await ex.read_body() or b""
            error = {"type": _error_type(invocation.header(ERROR_TYPE)), "body": _json(body)}
            self._settle(invocation, "error", ex, body=body, error=error)
            return await ex.respond(202, OK)
        mode = invocation.header("Lambda-Runtime-Function-Response-Mode")
        if mode is not None and mode != "streaming":
            error = {"type": "InvalidFunctionResponseMode", "body": mode}
            self._settle(invocation, "rejected", ex, error=error, answered=400)
            return await ex.respond(
                400, _api_error(f"Invalid response mode {mode!r}", "InvalidFunctionResponseMode"), close=True
            )
        if mode == "streaming":
            return await self._stream(invocation, ex)
        result = await ex.read_body(limit=MAX_BUFFERED)
        if result is None:  # too large: the runtime may still report an /error
            invocation.answered = 413
            return await ex.respond(413, _api_error("Response payload too large", "RequestEntityTooLarge"), close=True)
        self._settle(invocation, "response", ex, body=result)
        return await ex.respond(202, OK)

    async def _stream(self, invocation: Invocation, ex: _Exchange) -> bool:
        self._streams[invocation.request_id] = ex.writer
        body, pending = bytearray(), bytearray()
        try:
            while True:
                event = await ex.next_event()
                if isinstance(event, h11.Data):
                    pending += event.data
                    if not event.chunk_end:
                        continue
                    chunk = Chunk(time.monotonic(), bytes(pending))
                    pending.clear()
                    invocation.chunks.append(chunk)
                    body += chunk.data
                    invocation.updates.put_nowait(("chunk", chunk.data))
                    if (
                        invocation.break_after_chunks is not None
                        and len(invocation.chunks) >= invocation.break_after_chunks
                    ):
                        ex.writer.transport.abort()
                        self._settle(invocation, "broken", ex, body=bytes(body))
                        return False
                elif isinstance(event, h11.EndOfMessage):
                    invocation.trailers = {n.decode(): v.decode("latin-1") for n, v in event.headers.raw_items()}
                    break
                else:
                    raise ConnectionError("connection closed mid-stream")
        except (ConnectionError, h11.ProtocolError):
            self._settle(invocation, "broken", ex, body=bytes(body))
            return False
        finally:
            self._streams.pop(invocation.request_id, None)
        error = self._trailer_error(invocation, bytes(ex.raw))
        self._settle(invocation, "error" if error else "response", ex, body=bytes(body), error=error)
        return await ex.respond(202, OK)

    @staticmethod
    def _trailer_error(invocation: Invocation, raw: bytes) -> dict[str, Any] | None:
        section = len(raw) - (raw.rfind(b"\r\n0\r\n") + len(b"\r\n0\r\n"))
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
        ex: _Exchange,
        *,
        body: bytes = b"",
        error: dict[str, Any] | None = None,
        answered: int = 202,
    ) -> None:
        invocation.outcome = outcome
        invocation.raw = bytes(ex.raw)
        invocation.body = body
        invocation.error = error
        invocation.answered = None if outcome == "broken" else answered
        invocation.finished.set()
        invocation.updates.put_nowait(("end", b""))


class _Exchange:
    """One request/response on a server connection, recording the raw bytes it read."""

    def __init__(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer
        self.raw = bytearray()

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(65536)
            self.raw += data
            self.conn.receive_data(data)

    async def read_body(self, limit: int | None = None) -> bytes | None:
        """The whole request body, or None once it exceeds `limit`."""
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if limit is not None and len(body) > limit:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise ConnectionError("connection closed before the request body ended")

    async def respond(
        self, status: int, body: Any, *, headers: Sequence[tuple[str, str]] = (), close: bool = False
    ) -> bool:
        payload = json.dumps(body).encode()
        head = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers]
        if close:
            head.append(("Connection", "close"))
        response = h11.Response(status_code=status, headers=head, reason=reason_phrase(status))
        self.writer.write(
            self.conn.send(response) + self.conn.send(h11.Data(data=payload)) + self.conn.send(h11.EndOfMessage())
        )
        await self.writer.drain()
        return not close


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _header(request: h11.Request, name: str) -> str | None:
    name_b = name.lower().encode()
    return next((v.decode("latin-1") for k, v in request.headers if k == name_b), None)


def _error_type(value: str | None) -> str:
    """What Lambda records: the given type if well-formed, else Runtime.Unknown."""
    return value if value and ERROR_TYPE_PATTERN.fullmatch(value) else "Runtime.Unknown"


def _api_error(message: str, error_type: str) -> dict[str, str]:
    return {"errorMessage": message, "errorType": error_type}


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
            from .function_url import FunctionURL

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

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop thread and return its result."""

        async def wrapper() -> T:
            return fn()

        return self._run(wrapper())

    def _create(self) -> None:
        self.emulator = RuntimeAPIEmulator()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)


# --- `python -m aisix.lambda_runtime.emulator` -------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aisix.lambda_runtime.emulator",
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
    from .function_url import FunctionURL

    emulator = RuntimeAPIEmulator(default_timeout_ms=args.timeout * 1000, history=100)
    address = await emulator.start()
    front = FunctionURL(emulator, propagate_disconnect=args.propagate_disconnect)
    host, port = await front.start(args.host, args.port)
    print(f"Function URL (RESPONSE_STREAM) at http://{host}:{port}/  ·  runtime API at {address}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    env = {**os.environ, **lambda_environment(address)}
    if args.no_runtime:
        print(f"export AWS_LAMBDA_RUNTIME_API={address}", flush=True)
        supervisors = []
    else:
        supervisors = [asyncio.ensure_future(_supervise(args.app, env, stop)) for _ in range(args.concurrency)]
    await stop.wait()
    await asyncio.gather(*supervisors)
    await front.close()
    await emulator.close()


async def _supervise(app: str, env: dict[str, str], stop: asyncio.Event) -> None:
    """Keep one runtime process alive, restarting it like Lambda does after a crash."""
    while not stop.is_set():
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "aisix.lambda_runtime", app, env=env)
        waiter = asyncio.ensure_future(process.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            stopper.cancel()
            if process.returncode is None:
                process.terminate()  # SIGTERM: the runtime runs the app's lifespan shutdown
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
