"""Anthropic's Messages API: ``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``.

Neutral requests become Messages bodies (content blocks, ``tool_use`` /
``tool_result``, ``thinking``); answers, SSE streams (``event:`` + ``data:``
lines, one JSON object per event whose ``type`` repeats the event name) and
errors (``{"type": "error", "error": {"type", "message"}}``) come back as
neutral values. Reference: the API reference (docs.anthropic.com/en/api/messages,
/en/api/messages-streaming, /en/api/errors) and the ``anthropic`` SDK's types.

`SSEEvents` (a bounded, byte-exact SSE event splitter) lives here because the
Anthropic pass-through (`aisix.dialects.anthropic_messages.AnthropicPassthrough`)
needs each upstream event's raw bytes and its ``event:`` name, which the
relay's data-only decoder does not give.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from ..config import ModelConfig
from ..errors import GatewayError, bad_request, upstream_error
from ..translate.neutral import (
    CacheBreakpoints,
    ChatRequest,
    ChatResponse,
    Finish,
    FinishReason,
    ImagePart,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
    cache_breakpoints,
)
from ..usage import TokenUsage
from .base import Provider, failed_after, in_stream_error, json_body, refusal

log = logging.getLogger("aisix.providers.anthropic")

ANTHROPIC_VERSION = "2023-06-01"

# The output budget sent when neither the client nor the model's ``max_tokens`` key says one
# (Anthropic requires ``max_tokens`` on every call; Codex and most OpenAI clients send none):
# 32,000 tokens, what Claude Code itself asks for, capped at the model's own output limit
# for the older families whose limit is lower (`CLAUDE_OUTPUT_CAPS`, from Anthropic's models
# overview). Not the model's full limit (64,000 for Sonnet 4.x, 128,000 for the newest):
# Anthropic estimates the output-tokens-per-minute rate limit from ``max_tokens``, so a
# larger default would refuse calls early on smaller accounts. The models file's
# ``max_tokens`` key says otherwise per model. Bedrock's Anthropic models follow the same rule.
DEFAULT_MAX_TOKENS = 32_000
# Claude families whose output limit is below the default, by a fragment of the model id
# (Anthropic's ids and Bedrock's alike: "claude-3-5-haiku-20241022", "anthropic.claude-3-haiku-...").
CLAUDE_OUTPUT_CAPS = (
    ("claude-3-5-haiku", 8192), ("claude-3-5-sonnet", 8192),
    ("claude-3-haiku", 4096), ("claude-3-sonnet", 4096), ("claude-3-opus", 4096),
    ("claude-v2", 4096), ("claude-instant", 4096),
)

# Anthropic refuses a thinking budget below this (``budget_tokens`` must be >= 1024).
MIN_THINKING_BUDGET = 1024
# A neutral reasoning effort as a thinking budget. Anthropic's guidance starts at the
# minimum and grows for harder tasks; these are the same steps LiteLLM and OpenRouter use
# in spirit (low: the minimum; medium: 4x; high: 16x), small enough not to surprise a bill.
EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}

# An SSE event larger than this (bytes, one event) is refused: a Messages event is a few
# hundred bytes; a whole tool_use input in one delta may be large, hence the room.
MAX_EVENT_BYTES = 8 * 1024 * 1024

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> FinishReason:
    """Anthropic's ``stop_reason`` as a neutral finish reason (unknown ones: "stop")."""
    return _STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from_anthropic(raw: Any, input_fallback: TokenUsage | None = None) -> TokenUsage | None:
    """A Messages ``usage`` object as `TokenUsage`.

    Anthropic's ``input_tokens`` leaves out cached tokens: the prompt is
    ``input + cache_read + cache_creation``. A stream's ``message_delta``
    usage may carry only ``output_tokens``: the input side then comes from
    ``input_fallback`` (what ``message_start`` said).
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("output_tokens"), int):
        return None
    fallback = input_fallback or TokenUsage(0, 0, 0)

    def count(name: str, default: int) -> int:
        value = raw.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default

    cache_read = count("cache_read_input_tokens", fallback.cached_tokens)
    cache_write = count("cache_creation_input_tokens", fallback.cache_write_tokens)
    fresh = count("input_tokens", fallback.prompt_tokens - fallback.cached_tokens - fallback.cache_write_tokens)
    prompt = fresh + cache_read + cache_write
    completion = count("output_tokens", 0)
    return TokenUsage(prompt, completion, prompt + completion, cached_tokens=cache_read,
                      cache_write_tokens=cache_write)


def claude_max_tokens(model: ModelConfig) -> tuple[int, str]:
    """The output budget for a call that sends none, and where it comes from (for the log line)."""
    if model.max_tokens:
        return model.max_tokens, "the models file's max_tokens"
    name = model.model.lower()
    for fragment, cap in CLAUDE_OUTPUT_CAPS:
        if fragment in name:
            return cap, f"the output limit of {fragment}"
    return DEFAULT_MAX_TOKENS, "the default for Claude models"


def last_turn_calls_tools(request: ChatRequest) -> bool:
    """Whether the conversation's last assistant turn called a tool (the request continues a tool loop).

    Claude with thinking on refuses such a request unless that turn's thinking block is
    sent back ("a final assistant message must start with a thinking block"); a translated
    history never has it (no other protocol carries Anthropic's signed thinking), so the
    turn is answered without thinking instead.
    """
    for message in reversed(request.messages):
        if message.role == "assistant":
            return any(isinstance(part, ToolCall) for part in message.parts)
    return False


def claude_refuses_thinking(request: ChatRequest) -> bool:
    """Whether Claude (on Anthropic or Bedrock) would refuse thinking on this request: with a forced
    tool choice, or in a tool loop whose thinking block a translated history lacks. Noted on the request."""
    if request.tool_choice == "required" or request.tool_choice_name:
        request.notes.append("thinking not sent (Claude refuses it with a forced tool choice)")
        return True
    if last_turn_calls_tools(request):
        request.notes.append("thinking not sent this turn (the tool call's thinking block is not in the history)")
        return True
    return False


def messages_url(base_url: str, path: str = "/v1/messages") -> str:
    """``{base_url}/v1/messages``, whether ``base_url`` ends with ``/v1`` or not."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base + path


class AnthropicProvider(Provider):
    """One Anthropic model: neutral requests in, Messages API calls out."""

    kind = "anthropic"
    native_dialects = frozenset({"anthropic_messages"})
    serves = frozenset({"chat", "count_tokens"})

    def __init__(self, model: ModelConfig) -> None:
        super().__init__(model)
        self.url = messages_url(model.base_url)
        self.count_url = messages_url(model.base_url, "/v1/messages/count_tokens")
        base = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if model.api_key:
            base["x-api-key"] = model.api_key
        self.headers = {**base, "accept": "application/json"}
        self.stream_headers = {**base, "accept": "text/event-stream"}
        self.default_max_tokens, self.default_max_tokens_source = claude_max_tokens(model)

    # -- chat ---------------------------------------------------------------------

    def chat_request(self, client: httpx.AsyncClient, request: ChatRequest, stream: bool) -> httpx.Request:
        body = self.messages_body(request)
        if stream:
            body["stream"] = True
        return self.post(client, self.url, json_body(body), self.stream_headers if stream else self.headers)

    def messages_body(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages body for ``request`` (without ``stream``)."""
        notes = request.notes
        marks = cache_breakpoints(request)
        body: dict[str, Any] = {"model": self.model.model, "messages": _messages(request, marks)}
        max_tokens = request.max_tokens
        if not max_tokens:
            max_tokens = self.default_max_tokens
            log.debug("model %s: no max_tokens in the request, sending %d (%s)", self.model.name, max_tokens,
                      self.default_max_tokens_source)
            notes.append(f"max_tokens {max_tokens} ({self.default_max_tokens_source})")
        if request.system:
            body["system"] = request.system
            if marks.system:
                body["system"] = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
        if request.tools:
            body["tools"] = [_tool(tool.name, tool.description, tool.parameters) for tool in request.tools]
            if marks.tools:
                body["tools"][-1]["cache_control"] = {"type": "ephemeral"}
        if marks:
            notes.append(f"prompt caching: {marks.count()} cache_control breakpoint(s)")
        choice = _tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice
        budget = self._thinking_budget(request)
        if budget:
            if budget >= max_tokens:
                # The budget counts inside max_tokens: keep the asked-for room for the answer itself.
                max_tokens = budget + max_tokens
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body["max_tokens"] = max_tokens
        if request.temperature is not None:
            if budget and request.temperature != 1:
                notes.append("temperature dropped (Anthropic takes only 1 with thinking)")
            else:
                body["temperature"] = request.temperature
        if request.top_p is not None:
            if budget and request.top_p < 0.95:
                notes.append("top_p dropped (Anthropic takes 0.95 to 1 with thinking)")
            else:
                body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        return body

    def _thinking_budget(self, request: ChatRequest) -> int | None:
        """The thinking budget to send (None: no thinking), with what became of the request's reasoning noted."""
        budget = request.reasoning_budget
        if budget is None and request.reasoning_effort:
            if request.reasoning_effort in ("none", "minimal"):
                request.notes.append(f"reasoning effort {request.reasoning_effort}: no thinking")
                return None
            budget = EFFORT_BUDGETS.get(request.reasoning_effort, EFFORT_BUDGETS["high"])
        if not budget:
            return None
        if claude_refuses_thinking(request):
            return None
        budget = max(budget, MIN_THINKING_BUDGET)
        request.notes.append(f"reasoning -> thinking budget_tokens {budget}")
        return budget

    def chat_response(self, body: bytes) -> ChatResponse:
        message = _json_object(body)
        content = message.get("content")
        if not isinstance(content, list):
            raise upstream_error(f"The upstream for '{self.model.name}' answered without content.")
        parts: list[TextPart | ToolCall] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text" and isinstance(block.get("text"), str):
                parts.append(TextPart(block["text"]))
            elif kind == "tool_use":
                parts.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""),
                                      json.dumps(block.get("input") or {}, separators=(",", ":"),
                                                 ensure_ascii=False)))
            # thinking / redacted_thinking: the model's reasoning, not answer text. Server-tool
            # blocks never come: this provider sends no server tools.
        message_id = message.get("id")
        return ChatResponse(parts, finish_reason(message.get("stop_reason")),
                            usage_from_anthropic(message.get("usage")),
                            id=message_id if isinstance(message_id, str) else None)

    def stream_decoder(self) -> "AnthropicStreamDecoder":
        return AnthropicStreamDecoder(self.model)

    # -- pass-through ------------------------------------------------------------------

    def passthrough_request(
        self, client: httpx.AsyncClient, body: dict[str, Any], client_headers: Mapping[str, str],
        path: str = "/v1/messages", query: str = "",
    ) -> httpx.Request:
        """A Messages request from an Anthropic client, forwarded as it came but model and key.

        ``anthropic-beta`` and the client's ``anthropic-version`` go along
        untouched (Claude Code depends on its betas); ``query`` (Claude Code
        sends ``?beta=true``) is kept.
        """
        forwarded = dict(body)
        forwarded["model"] = self.model.model
        stream = forwarded.get("stream") is True
        headers = dict(self.stream_headers if stream else self.headers)
        for name in ("anthropic-beta", "anthropic-version"):
            value = client_headers.get(name)
            if value:
                headers[name] = value
        url = messages_url(self.model.base_url, path) + (f"?{query}" if query else "")
        return client.build_request("POST", url, content=json_body(forwarded), headers=headers,
                                    timeout=self.timeout)

    # -- token counting ------------------------------------------------------------------

    def count_tokens_request(self, client: httpx.AsyncClient, request: ChatRequest) -> httpx.Request:
        body = self.messages_body(request)
        # count_tokens refuses the sampling fields ("Extra inputs are not permitted").
        for name in ("max_tokens", "temperature", "top_p", "stop_sequences"):
            body.pop(name, None)
        return self.post(client, self.count_url, json_body(body), self.headers)

    def count_tokens_response(self, body: bytes) -> int:
        tokens = _json_object(body).get("input_tokens")
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            raise upstream_error(f"The upstream for '{self.model.name}' answered a count without input_tokens.")
        return tokens

    # -- errors ---------------------------------------------------------------------------

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """``{"type": "error", "error": {"type", "message"}}`` with its wording and type kept."""
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            parsed = None
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict):
            return refusal(self.model, status, headers)
        refused = refusal(self.model, status, headers, message=error.get("message"), type=error.get("type"))
        if error.get("type") == "overloaded_error" and refused.status >= 500:
            # Kept so an Anthropic client sees overloaded_error (Claude Code retries on it).
            refused.type = "overloaded_error"
        return refused


# -- request pieces ------------------------------------------------------------------


def _messages(request: ChatRequest, marks: CacheBreakpoints | None = None) -> list[dict[str, Any]]:
    cached = set(marks.parts) if marks else set()
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        blocks = []
        for number, part in enumerate(message.parts):
            block = _block(part, index)
            if block is not None:
                if (index, number) in cached:
                    block["cache_control"] = {"type": "ephemeral"}
                blocks.append(block)
        if not blocks:
            continue  # only empty text (an OpenAI assistant turn with content ""): Anthropic refuses empty blocks
        if message.role == "user":
            # Anthropic wants a user turn's tool_result blocks before anything else in it.
            blocks.sort(key=lambda block: block["type"] != "tool_result")
        messages.append({"role": message.role, "content": blocks})
    return messages


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)


def _block(part: Any, message_index: int) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        if part.data is not None:
            source = {"type": "base64", "media_type": part.media_type or "image/png", "data": part.data}
        elif part.url and (inline := _DATA_URL.fullmatch(part.url)):
            source = {"type": "base64", "media_type": inline.group(1), "data": inline.group(2)}
        else:
            source = {"type": "url", "url": part.url or ""}
        return {"type": "image", "source": source}
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _arguments(part, message_index)}
    if isinstance(part, ToolResult):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id, "content": part.content}
        if part.is_error:
            block["is_error"] = True
        return block
    raise TypeError(f"not a neutral part: {part!r}")


def _arguments(call: ToolCall, message_index: int) -> dict[str, Any]:
    """A tool call's arguments JSON text as the object ``tool_use.input`` must be."""
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        field = f"messages[{message_index}].tool_calls.arguments"
        raise bad_request(
            f"The arguments of tool call '{call.id}' ({call.name}) in messages[{message_index}] are not a JSON "
            f"object; Anthropic needs one.", param=field, code="invalid_tool_arguments",
        )
    return value


def _tool(name: str, description: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    schema = dict(parameters) if parameters else {}
    # Anthropic requires an object schema; OpenAI tools without arguments often send none.
    schema.setdefault("type", "object")
    tool: dict[str, Any] = {"name": name, "input_schema": schema}
    if description:
        tool["description"] = description
    return tool


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    if request.tool_choice_name:
        return {"type": "tool", "name": request.tool_choice_name}
    if request.tool_choice == "required":
        return {"type": "any"}
    if request.tool_choice in ("auto", "none"):
        return {"type": request.tool_choice}
    return None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise upstream_error("The upstream answered with a body that is not a JSON object.")
    return parsed


# -- streams ---------------------------------------------------------------------------


class EventTooLarge(Exception):
    pass


_EOL = re.compile(rb"\r\n|\n|\r")


class SSEEvents:
    """Bounded, incremental SSE splitter: bytes in, complete events out as (raw bytes, event, data).

    ``raw`` is the event exactly as it came (its lines and the blank line that
    ended it), so a pass-through can relay it byte for byte, one event per
    write. Lines end with CRLF, LF or CR, also split across reads; ``data``
    lines are joined with LF; comment-only blocks and a trailing event that
    no blank line ended are dropped, as the SSE spec says. An event longer
    than ``limit`` bytes raises `EventTooLarge` instead of growing the buffer.
    """

    __slots__ = ("_buf", "_pos", "_event", "_data", "_limit", "_started")

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0  # where the next unread line starts in _buf
        self._event: str | None = None
        self._data: list[str] = []
        self._limit = limit
        self._started = False

    def feed(self, data: bytes) -> list[tuple[bytes, str | None, str]]:
        if self._started and not self._buf and b"\r" not in data:
            return self._fast(data)
        return self._slow(data)

    def _fast(self, data: bytes) -> list[tuple[bytes, str | None, str]]:
        """At an event boundary with LF-only input (what Anthropic sends): whole events split at once."""
        parts = data.split(b"\n\n")
        tail = parts.pop()
        out: list[tuple[bytes, str | None, str]] = []
        for part in parts:
            part = part.lstrip(b"\n")  # blank lines between events belong to no event
            if not part:
                continue
            if len(part) > self._limit:
                raise EventTooLarge
            for line in part.split(b"\n"):
                self._field(line)
            if self._event is not None or self._data:
                out.append((part + b"\n\n", self._event, "\n".join(self._data)))
                self._event, self._data = None, []
        if tail:
            out.extend(self._slow(tail))
        return out

    def _slow(self, data: bytes) -> list[tuple[bytes, str | None, str]]:
        buf = self._buf
        buf += data
        if not self._started and len(buf) >= 3:
            self._started = True
            if buf[:3] == b"\xef\xbb\xbf":
                del buf[:3]
        out: list[tuple[bytes, str | None, str]] = []
        while True:
            match = _EOL.search(buf, self._pos)
            if match is None or (match.group() == b"\r" and match.end() == len(buf)):
                break  # no complete line yet (a CR at the end may be half of a CRLF)
            line = bytes(buf[self._pos:match.start()])
            self._pos = match.end()
            if line:
                self._field(line)
                continue
            if self._event is not None or self._data:
                out.append((bytes(buf[:self._pos]), self._event, "\n".join(self._data)))
            del buf[:self._pos]
            self._pos = 0
            self._event, self._data = None, []
        if len(buf) > self._limit:
            raise EventTooLarge
        return out

    def _field(self, line: bytes) -> None:
        if line[:1] == b":":
            return  # a comment
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


class AnthropicStreamDecoder:
    """A Messages SSE stream as neutral events.

    ``message_start`` gives the input side of the usage; each ``tool_use``
    block becomes a `ToolCallStart` with the next tool index and its
    ``input_json_delta`` fragments `ToolCallDelta` s; thinking blocks and
    their deltas are the model's reasoning and are skipped; ``message_delta``
    gives the `Finish` and the (cumulative) `UsageReport`; ``message_stop``
    ends the answer (``done``). An ``error`` event raises.
    """

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.done = False
        self._events = SSEEvents()
        self._start_usage: TokenUsage | None = None
        self._tools: dict[int, int] = {}  # content block index -> tool index

    def feed(self, data: bytes) -> list[StreamEvent]:
        try:
            raw_events = self._events.feed(data)
        except EventTooLarge:
            raise upstream_error(f"The upstream for '{self.model.name}' sent an event larger than "
                                 f"{MAX_EVENT_BYTES} bytes.") from None
        out: list[StreamEvent] = []
        try:
            for _raw, name, payload in raw_events:
                self._event(name, payload, out)
        except GatewayError as error:
            raise failed_after(error, out) from None
        return out

    def _event(self, name: str | None, payload: str, out: list[StreamEvent]) -> None:
        if self.done:
            return
        try:
            event = json.loads(payload) if payload else {}
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            raise upstream_error(f"The upstream for '{self.model.name}' sent an event that is not a JSON object.")
        kind = event.get("type") or name
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    out.append(TextDelta(text))
            elif delta_type == "input_json_delta":
                fragment = delta.get("partial_json")
                tool = self._tools.get(event.get("index"))  # type: ignore[arg-type]
                if tool is not None and isinstance(fragment, str) and fragment:
                    out.append(ToolCallDelta(tool, fragment))
            # thinking_delta, signature_delta, citations_delta: nothing neutral
        elif kind == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, dict):
                return
            if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
                out.append(TextDelta(block["text"]))
            elif block.get("type") == "tool_use":
                tool = len(self._tools)
                self._tools[event.get("index")] = tool  # type: ignore[index]
                tool_id = block.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"
                out.append(ToolCallStart(tool, str(tool_id), str(block.get("name") or "")))
                if isinstance(block.get("input"), dict) and block["input"]:
                    out.append(ToolCallDelta(tool, json.dumps(block["input"], separators=(",", ":"),
                                                              ensure_ascii=False)))
        elif kind == "message_start":
            message = event.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._start_usage = usage_from_anthropic({**usage, "output_tokens": 0})
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                out.append(Finish(finish_reason(delta["stop_reason"])))
            usage = usage_from_anthropic(event.get("usage"), self._start_usage)
            if usage is not None:
                out.append(UsageReport(usage))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = event.get("error")
            error = error if isinstance(error, dict) else {}
            raise in_stream_error(self.model, error.get("message"), type=error.get("type"),
                                  code=error.get("type"))
        # content_block_stop, ping and event types added later: nothing to say
