"""The load generator: a raw asyncio-socket HTTP/1.1 keep-alive client.

Cheap enough not to limit a run on 2 cores (asyncio Protocol API on uvloop, a
hand-written response parser, no per-request allocations beyond the response),
and it sees what an ASGI or httpx client would hide: the time each ``recv``
happened and how many complete SSE events each one carried, which is how the
benchmark checks that the gateway never merges upstream events.

Responses may be framed by ``content-length``, by chunked transfer encoding,
or by the connection closing. Streams may be framed the way each client protocol
frames them: OpenAI chat (``data:`` lines, ending with ``data: [DONE]``),
Anthropic Messages (``event: <type>`` + ``data:``; content in
``content_block_delta``, the end is ``message_stop``) and OpenAI Responses
(typed events; content in ``response.output_text.delta``, the end is
``response.completed``). Each event says which by its first line, so the
OpenAI path pays nothing for the others.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

STAMP = re.compile(rb'"content":" (\d+)@(\d+)"')
# Typed events (Anthropic, Responses): the stamp is the whole text of a content event's delta,
# whatever the key and the JSON spacing (`"text":" 5@123"`, `"delta": " 5@123"`).
TYPED_STAMP = re.compile(rb'": ?" (\d+)@(\d+)"')
TYPED_CONTENT = (b"content_block_delta", b"response.output_text.delta")
TYPED_END = (b"message_stop", b"response.completed")


@dataclass(slots=True)
class Response:
    status: int = 0
    sent_ns: int = 0
    headers_ns: int = 0  # status line and headers parsed
    first_event_ns: int = 0  # first SSE event carrying a content chunk
    last_event_ns: int = 0
    max_gap_ns: int = 0  # longest time between two consecutive events (reset by whoever watches it)
    end_ns: int = 0
    body_bytes: int = 0
    events: int = 0  # complete SSE events
    content_events: int = 0  # events carrying a content chunk (a stamped text delta)
    done: bool = False  # saw the stream's end: data: [DONE], event: message_stop or event: response.completed
    # Per content event: (arrival ns, upstream send ns), when stamps are kept.
    stamps: list[tuple[int, int]] = field(default_factory=list)
    # Per recv() that carried body bytes: complete events it ended, and whether it ended mid-event.
    recv_events: list[int] = field(default_factory=list)
    recv_partial: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    body: bytes = b""

    @property
    def latency_ms(self) -> float:
        return (self.end_ns - self.sent_ns) / 1e6

    @property
    def ttft_ms(self) -> float:
        return (self.first_event_ns - self.sent_ns) / 1e6


class Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.closed = asyncio.get_event_loop().create_future()
        self.buf = bytearray()
        self.future: asyncio.Future[Response] | None = None
        self.resp: Response | None = None
        self.keep_body = False
        self.keep_stamps = False
        self.sse = False
        self._state = 0  # 0 head, 1 content-length body, 2 chunked, 3 until close, 4 idle
        self._remaining = 0
        self._sse_tail = b""
        self.on_event: Callable[[Response, int], None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.future is not None and not self.future.done():
            resp = self.resp or Response()
            if self._state == 3:
                resp.end_ns = time.monotonic_ns()
                self.future.set_result(resp)
            else:
                resp.error = f"connection lost ({exc or 'EOF'})"
                resp.end_ns = time.monotonic_ns()
                self.future.set_result(resp)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        resp = self.resp
        if resp is None:
            return
        self.buf += data
        payload = bytearray()
        self._parse(now, payload)
        if payload and self.sse:
            self._sse(now, bytes(payload))
        elif payload and self.keep_body:
            resp.body += bytes(payload)

    # -- requests -------------------------------------------------------------
    def request(self, raw: bytes, *, sse: bool = False, keep_stamps: bool = False, keep_body: bool = False) -> asyncio.Future[Response]:
        loop = asyncio.get_event_loop()
        self.future = loop.create_future()
        self.resp = Response()
        self.sse, self.keep_stamps, self.keep_body = sse, keep_stamps, keep_body
        self._state = 0
        self._sse_tail = b""
        self.resp.sent_ns = time.monotonic_ns()
        self.transport.write(raw)
        return self.future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- parsing ----------------------------------------------------------------
    def _parse(self, now: int, payload: bytearray) -> None:
        resp = self.resp
        assert resp is not None
        buf = self.buf
        while True:
            if self._state == 0:
                end = buf.find(b"\r\n\r\n")
                if end == -1:
                    return
                head = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                resp.status = int(head[0].split(" ", 2)[1])
                if resp.status == 100:
                    continue
                resp.headers_ns = now
                chunked, length = False, None
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    value = value.strip()
                    resp.headers[name] = value
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                if chunked:
                    self._state, self._remaining = 2, -1
                elif length is not None:
                    self._state, self._remaining = 1, length
                    if length == 0:
                        self._finish(now)
                        return
                else:
                    self._state = 3
            elif self._state == 1:
                take = min(len(buf), self._remaining)
                if take:
                    payload += buf[:take]
                    del buf[:take]
                    self._remaining -= take
                    resp.body_bytes += take
                if self._remaining == 0:
                    self._finish(now)
                return
            elif self._state == 2:
                if self._remaining == -1:  # expecting a chunk-size line
                    end = buf.find(b"\r\n")
                    if end == -1:
                        return
                    size = int(bytes(buf[:end]).split(b";")[0], 16)
                    del buf[: end + 2]
                    if size == 0:
                        self._remaining = -2
                    else:
                        self._remaining = size + 2  # data plus its CRLF
                if self._remaining == -2:  # trailers, then an empty line
                    end = buf.find(b"\r\n")
                    if end == -1:
                        return
                    line = bytes(buf[:end])
                    del buf[: end + 2]
                    if line == b"":
                        self._finish(now)
                        return
                    continue
                if self._remaining > 0:
                    take = min(len(buf), self._remaining)
                    data = buf[:take]
                    del buf[:take]
                    self._remaining -= take
                    # Strip the trailing CRLF of the chunk from the payload.
                    data_part = max(0, min(take, self._remaining + take - 2))
                    if data_part:
                        payload += data[:data_part]
                        resp.body_bytes += data_part
                    if self._remaining == 0:
                        self._remaining = -1
                        continue
                    return
            elif self._state == 3:
                payload += buf
                resp.body_bytes += len(buf)
                buf.clear()
                return
            else:
                return

    def _finish(self, now: int) -> None:
        resp = self.resp
        assert resp is not None and self.future is not None
        resp.end_ns = now
        self._state = 4
        if not self.future.done():
            self.future.set_result(resp)

    def _sse(self, now: int, data: bytes) -> None:
        resp = self.resp
        assert resp is not None
        text = self._sse_tail + data
        parts = text.split(b"\n\n")
        self._sse_tail = parts.pop()
        complete = 0
        for event in parts:
            if event.startswith(b"data: "):  # OpenAI chat: data lines only
                end = event == b"data: [DONE]"
                match = None if end else STAMP.search(event)
            elif event.startswith(b"event: "):  # Anthropic, Responses: the type on the first line
                kind = event[7:event.find(b"\n")]
                end = kind in TYPED_END
                match = TYPED_STAMP.search(event) if kind in TYPED_CONTENT else None
            else:
                continue  # comments (keep-alives)
            complete += 1
            resp.events += 1
            if resp.last_event_ns and now - resp.last_event_ns > resp.max_gap_ns:
                resp.max_gap_ns = now - resp.last_event_ns
            resp.last_event_ns = now
            if end:
                resp.done = True
                continue
            if match is not None:
                resp.content_events += 1
                if not resp.first_event_ns:
                    resp.first_event_ns = now
                if self.keep_stamps:
                    resp.stamps.append((now, int(match.group(2))))
            elif self.keep_body:
                resp.body += event + b"\n\n"
            if self.on_event is not None:
                self.on_event(resp, now)
        resp.recv_events.append(complete)
        if self._sse_tail:
            resp.recv_partial += 1


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
            f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def closed_loop(
    host: str,
    port: int,
    raw: bytes,
    concurrency: int,
    *,
    duration: float,
    max_requests: int,
    sse: bool = False,
    keep_stamps: bool = False,
    think: float = 0.0,
) -> list[Response]:
    """``concurrency`` connections, each sending ``raw`` again as soon as the last answer ends
    (or ``think`` seconds after it).

    Stops after ``duration`` seconds or ``max_requests`` requests, whichever comes first.
    A connection the server closes is reopened.
    """
    results: list[Response] = []
    deadline = time.monotonic() + duration
    budget = [max_requests]

    async def worker() -> None:
        conn = await connect(host, port)
        try:
            while budget[0] > 0 and time.monotonic() < deadline:
                budget[0] -= 1
                if think and results:
                    await asyncio.sleep(think)
                if conn.closed.done():
                    conn = await connect(host, port)
                resp = await conn.request(raw, sse=sse, keep_stamps=keep_stamps)
                results.append(resp)
                if resp.error or resp.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = await connect(host, port)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank on sorted values; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]
