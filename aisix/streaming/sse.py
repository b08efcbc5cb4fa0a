"""Server-Sent Events: the bounded incremental decoder, and the framing every SSE dialect shares."""

from __future__ import annotations

import codecs
import json
from typing import Any

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
# The largest single event the relay holds (a chunk is usually a few hundred bytes).
MAX_EVENT_BYTES = 8 * 1024 * 1024

_raw_decode = json.JSONDecoder().raw_decode


class EventTooLarge(Exception):
    pass


class SSEDecoder:
    """Incremental Server-Sent Events decoder: bytes in, each event's ``data`` out.

    Follows the SSE spec's parsing rules: lines end with CRLF, LF or CR (also
    split across reads), ``data`` lines of one event are joined with LF, one
    leading space after the colon is dropped, comments and other fields
    (``event``, ``id``, ``retry``) are ignored, a leading BOM is skipped, and
    an event not ended by a blank line when the stream ends is dropped.
    Unlike a generic parser it is bounded: an event (or a line) longer than
    ``limit`` characters raises `EventTooLarge` instead of being buffered.
    That bound is why this is not httpx-sse, which buffers a line or an event
    of any length (an upstream sending one endless line would grow the
    gateway's memory without limit) and decodes through two async generators.
    """

    __slots__ = ("_utf8", "_utf8_between", "_tail", "_tail_size", "_data", "_size", "_limit", "_cr", "_started")

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._utf8_between = True  # no character split across reads is pending in ``_utf8``
        self._tail: list[str] = []  # the pieces of an incomplete line
        self._tail_size = 0
        self._data: list[str] = []  # the data lines of the event being read
        self._size = 0
        self._limit = limit
        self._cr = False  # the last read ended with CR: a LF starting the next one ends no line
        self._started = False

    def feed(self, raw: bytes) -> list[str]:
        # Most reads are whole UTF-8: ``bytes.decode`` in C. The incremental decoder (Python code,
        # ~2 µs a read) only for a read that splits a character or holds invalid bytes, and for
        # the reads after it until nothing is pending.
        if self._utf8_between:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = self._utf8.decode(raw)
                self._utf8_between = not self._utf8.getstate()[0]
        else:
            text = self._utf8.decode(raw)
            self._utf8_between = not self._utf8.getstate()[0]
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        return self._lines(text)

    def _lines(self, text: str) -> list[str]:
        if self._cr and text[:1] == "\n":
            text = text[1:]
        self._cr = False
        if not text:
            return []
        if "\r" in text:
            self._cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:  # the middle of a long line: kept in pieces, never re-joined per read
            self._tail.append(text)
            self._tail_size += len(text)
            if self._tail_size + self._size > self._limit:
                raise EventTooLarge
            return []
        lines = text.split("\n")
        if self._tail:
            self._tail.append(lines[0])
            lines[0] = "".join(self._tail)
            self._tail = []
        last = lines.pop()
        if last:
            self._tail.append(last)
        self._tail_size = len(last)
        if self._tail_size + self._size > self._limit or len(lines[0]) > self._limit:
            raise EventTooLarge
        events: list[str] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                    self._size = 0
            elif line.startswith("data"):
                if line.startswith("data:"):
                    value = line[6:] if line[5:6] == " " else line[5:]
                elif line == "data":
                    value = ""
                else:
                    continue  # a field named e.g. "datax": ignored
                self._data.append(value)
                self._size += len(value) + 1
                if self._size > self._limit:
                    raise EventTooLarge
        return events


def decode_chunk(data: str) -> dict[str, Any] | None:
    """The event's data as a JSON object, or None if it is not one."""
    try:
        chunk, end = _raw_decode(data)
        if end != len(data) and data[end:].strip():
            return None
    except (ValueError, RecursionError):
        try:
            chunk = json.loads(data)  # leading white space, rare
        except (ValueError, RecursionError):
            return None
    return chunk if isinstance(chunk, dict) else None
