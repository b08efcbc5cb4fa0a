"""Client for the Lambda runtime API, the HTTP server at `$AWS_LAMBDA_RUNTIME_API`.

Calls reuse one kept-alive HTTP/1.1 connection: a new loopback connection cost ~100 µs
of CPU on each side (bench/RESULTS.md: the runtime loop's own cost per invocation),
and a buffered invocation makes two calls. A kept connection can be stale (after a
SnapStart restore, or when the server closed it while idle): a call that finds it
closed before any byte of the answer is made again once, on a fresh connection. A
streamed response has a connection of its own, dropped when it ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import h11

from .stream import (
    ERROR_BODY,
    ERROR_TYPE,
    HTTP_INTEGRATION_RESPONSE,
    Answer,
    ResponseStream,
    error_payload,
    read_answer,
)

PREFIX = "/2018-06-01/runtime"
EXTENSION_PREFIX = "/2020-01-01/extension"


@dataclass(frozen=True)
class Invocation:
    """One event handed out by `/invocation/next`, with the headers that describe it."""

    request_id: str
    deadline_ms: int
    invoked_function_arn: str
    trace_id: str | None
    client_context: str | None
    cognito_identity: str | None
    # Newer Lambda versions send it; echoing it back lets Lambda reject late answers.
    invocation_id: str | None
    event: bytes


class RuntimeAPI:
    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self._authority = address
        self._idle: tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection] | None = None

    async def next_invocation(self) -> Invocation:
        """Block until Lambda hands over the next event."""
        answer = await self._call("GET", f"{PREFIX}/invocation/next")
        if answer.status != 200:
            raise ConnectionError(f"/invocation/next answered {answer.status}: {answer.body[:200]!r}")
        h = answer.headers
        return Invocation(
            request_id=h["lambda-runtime-aws-request-id"],
            deadline_ms=int(h["lambda-runtime-deadline-ms"]),
            invoked_function_arn=h.get("lambda-runtime-invoked-function-arn", ""),
            trace_id=h.get("lambda-runtime-trace-id"),
            client_context=h.get("lambda-runtime-client-context"),
            cognito_identity=h.get("lambda-runtime-cognito-identity"),
            invocation_id=h.get("lambda-runtime-invocation-id"),
            event=answer.body,
        )

    async def post_response(self, invocation: Invocation, body: bytes) -> int:
        """A buffered result: no response-mode header at all (Lambda rejects `buffered`)."""
        answer = await self._call(
            "POST",
            f"{PREFIX}/invocation/{invocation.request_id}/response",
            [("Content-Type", "application/json"), *_echo(invocation)],
            body,
        )
        return answer.status

    async def post_error(self, invocation: Invocation, kind: str, message: str, error_type: str) -> int:
        answer = await self._call(
            "POST",
            f"{PREFIX}/invocation/{invocation.request_id}/error",
            [(ERROR_TYPE, kind), ("Content-Type", "application/json"), *_echo(invocation)],
            _error_body(message, error_type),
        )
        return answer.status

    async def post_init_error(self, kind: str, message: str, error_type: str) -> int:
        answer = await self._call(
            "POST",
            f"{PREFIX}/init/error",
            [(ERROR_TYPE, kind), ("Content-Type", "application/json")],
            _error_body(message, error_type),
        )
        return answer.status

    async def restore_next(self) -> None:
        """SnapStart: returns once the environment has been restored from the snapshot."""
        answer = await self._call("GET", f"{PREFIX}/restore/next")
        if answer.status != 200:
            raise ConnectionError(f"/restore/next answered {answer.status}")

    async def register_extension(self, name: str) -> str:
        """Register an internal extension for no events; returns its identifier.

        Its only purpose: Lambda sends SIGTERM (and allows 500 ms) to a runtime
        at spin-down only when an extension is registered, and that is when the
        app writes what it still holds (token charges). Must happen during init.
        """
        answer = await self._call(
            "POST", f"{EXTENSION_PREFIX}/register",
            [("Lambda-Extension-Name", name), ("Content-Type", "application/json")],
            b'{"events":[]}',
        )
        identifier = answer.headers.get("lambda-extension-identifier")
        if answer.status != 200 or not identifier:
            raise ConnectionError(f"extension registration answered {answer.status}: {answer.body[:200]!r}")
        return identifier

    async def extension_next(self, identifier: str) -> bytes:
        """The extension's `/event/next`: tells Lambda it is ready; blocks until an event (for us, never)."""
        answer = await self._call(
            "GET", f"{EXTENSION_PREFIX}/event/next", [("Lambda-Extension-Identifier", identifier)]
        )
        return answer.body

    async def open_stream(self, invocation: Invocation, prelude: bytes, on_gone: Callable[[], None]) -> ResponseStream:
        """Start a streamed response; `prelude` goes out as the first chunk."""
        reader, writer = await asyncio.open_connection(self._host, self._port)
        headers = [
            ("Host", self._authority),
            ("Lambda-Runtime-Function-Response-Mode", "streaming"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", f"{ERROR_TYPE}, {ERROR_BODY}"),
            ("Content-Type", HTTP_INTEGRATION_RESPONSE),
            *_echo(invocation),
        ]
        request = h11.Request(
            method="POST", target=f"{PREFIX}/invocation/{invocation.request_id}/response", headers=headers
        )
        stream = ResponseStream(reader, writer, h11.Connection(h11.CLIENT), on_gone)
        await stream.start(request, prelude)
        return stream

    async def _call(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Answer:
        head = [("Host", self._authority), *(headers or [])]
        if method != "GET":
            head.append(("Content-Length", str(len(body))))
        request = h11.Request(method=method, target=target, headers=head)
        kept, self._idle = self._idle, None  # taken: a concurrent call (the extension's) opens its own
        if kept is not None:
            try:
                return await self._exchange(*kept, request, body)
            except _Unanswered:
                pass  # closed while idle (or by a SnapStart restore) before it read our request: afresh
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            return await self._exchange(reader, writer, h11.Connection(h11.CLIENT), request, body)
        except _Unanswered as exc:
            raise ConnectionError(str(exc)) from None

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: h11.Connection,
        request: h11.Request, body: bytes,
    ) -> Answer:
        """One request and its answer on ``conn``; kept for the next call if both ended cleanly.
        Raises `_Unanswered` if the connection ends before any byte of the answer."""
        try:
            writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            answer = await read_answer(conn, reader)
        except (ConnectionError, OSError) as exc:
            writer.close()
            if conn.their_state is h11.SEND_RESPONSE:  # no answer had begun
                raise _Unanswered(str(exc) or type(exc).__name__) from None
            raise
        except BaseException:
            writer.close()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and self._idle is None:
            conn.start_next_cycle()
            self._idle = (reader, writer, conn)
        else:
            writer.close()
        return answer


class _Unanswered(ConnectionError):
    """The connection ended before the runtime API began its answer."""


def _echo(invocation: Invocation) -> list[tuple[str, str]]:
    return [("Lambda-Runtime-Invocation-Id", invocation.invocation_id)] if invocation.invocation_id else []


def _error_body(message: str, error_type: str) -> bytes:
    return json.dumps({**error_payload(message, error_type), "stackTrace": []}).encode()
