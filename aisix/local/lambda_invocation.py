"""What the emulator records per invocation, and the bounded pipe to a function URL client.

Tests invoke directly (`RuntimeAPIEmulator.invoke`) and read everything back: each chunk
with its arrival time, the raw request, the trailers. An invocation served to a real client
through the function URL keeps at most `record_limit` bytes of that record (then only
counters), and its body flows through a `Pipe` that holds at most `limit` bytes: when the
client reads slowly, the emulator stops reading the runtime's request, so TCP flow control
stalls the runtime's writes, as Lambda's does.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .lambda_wire import DELIMITER, RESPONSE_MODE

PIPE_LIMIT = 256 * 1024
RECORD_LIMIT = 1024 * 1024


@dataclass
class Chunk:
    at: float  # time.monotonic() when the chunk's last byte arrived
    data: bytes


class Pipe:
    """Body bytes on their way from the runtime to one HTTP client, at most `limit` held.

    `put` waits while the pipe is full (one piece larger than `limit` may pass alone);
    once the consumer is gone (`abandon`), pieces are dropped so the runtime never stalls.
    """

    def __init__(self, limit: int = PIPE_LIMIT) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._items: deque[bytes | None] = deque()  # None: the end
        self.blocked = False  # the producer waits for room (so it reads nothing from the runtime)
        self._changed = asyncio.Event()
        self._abandoned = False

    async def put(self, data: bytes) -> None:
        while self.held and self.held + len(data) > self.limit and not self._abandoned:
            self.blocked = True
            self._changed.clear()
            await self._changed.wait()
        self.blocked = False
        if self._abandoned or not data:
            return
        self._items.append(data)
        self.held += len(data)
        self.peak = max(self.peak, self.held)
        self._changed.set()

    def close(self) -> None:
        self._items.append(None)
        self._changed.set()

    async def get(self) -> bytes | None:
        """The next piece, or None at the end."""
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        data = self._items.popleft()
        if data is not None:
            self.held -= len(data)
        self._changed.set()
        return data

    def abandon(self) -> None:
        self._abandoned = True
        self._items.clear()
        self.held = 0
        self._changed.set()


@dataclass(eq=False)
class Invocation:
    """One event, and everything the runtime sent back for it."""

    request_id: str
    event: dict[str, Any]
    timeout_ms: int
    break_after_chunks: int | None = None  # cut the runtime's connection after this many chunks
    record_limit: int | None = None  # bytes of chunks (and raw request) to keep; None: all
    pipe: Pipe | None = None  # set when an HTTP client reads the body as it arrives
    deadline_ms: int = 0
    dispatched: bool = False
    # What the runtime sent for it (its /response or /error request).
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""  # the request as received (its head only, if `complete` is False)
    chunks: list[Chunk] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # the buffered result, or the streamed body (its head, if not `complete`)
    error: dict[str, Any] | None = None  # {"type", "body"} from /error or the error trailers
    outcome: str | None = None  # "response", "error", "rejected" or "broken"
    answered: int | None = None  # the status we answered the runtime with
    # Counted whether or not the chunks are kept.
    chunk_count: int = 0
    bytes_received: int = 0  # streamed body bytes
    last_chunk_at: float | None = None
    complete: bool = True  # False once `record_limit` cut the record short
    held: int = 0  # bytes this invocation holds in the emulator now (record + pipe + partial chunk)
    peak_held: int = 0
    finished: threading.Event = field(default_factory=threading.Event)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def streamed(self) -> bool:
        return self.header(RESPONSE_MODE) == "streaming"

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
