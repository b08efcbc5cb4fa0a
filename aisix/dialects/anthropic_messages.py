"""Anthropic Messages (``POST /v1/messages``), as clients speak it: the Anthropic SDKs, Claude Code.

Two paths:

* **pass-through** (the model's upstream is Anthropic): the body goes up as it
  came, model id and key swapped, and the upstream's events come back byte for
  byte (`AnthropicPassthrough` splits them and reads usage on the way);
* **translation** (any other upstream): the body is read into the neutral model
  (`to_chat`), and the neutral answer is written back as a ``Message`` body
  (`chat_answer`) or as the Messages event stream (`AnthropicStreamEncoder`).

Everything written follows Anthropic's API reference and the ``anthropic`` SDK's
types (the tests validate with them). Errors are Anthropic's shape,
``{"type": "error", "error": {"type", "message"}}``, and ``event: error`` in a
stream. Claude Code matters most here: it rejects a stream whose
``message_start`` reports zero input tokens, sends its key as ``x-api-key`` or
(with ``ANTHROPIC_AUTH_TOKEN``) as a Bearer token, and sends fields that only
tune Anthropic's service (`DROPPED_FIELDS`) and thinking blocks from earlier
turns, which a translated call leaves behind, and ``cache_control`` markers,
which become the provider's own prompt caching where it has one
(``ChatRequest.cache_*``, ``TextPart.cache``). A top-level field this module
does not know (a newer Claude Code sends one before the gateway learns of it)
is dropped too, not refused: what it asks of Anthropic's service cannot be
asked of another provider, and refusing it would break the client on every
call. Whatever is dropped or mapped is named in the call's one log line
(``ChatRequest.notes``); only what would change the answer's meaning (server
tools, structured output, images in tool results, documents, ...) is a 400.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError, bad_request, upstream_error
from ..providers.anthropic import EventTooLarge, MAX_EVENT_BYTES, SSEEvents, usage_from_anthropic
from ..providers.base import failed_after, in_stream_error
from ..translate.neutral import (
    ChatRequest,
    ChatResponse,
    Finish,
    ImagePart,
    Message,
    Part,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
    unsupported,
)
from ..usage import TOKENS_PER_MESSAGE, TokenUsage, estimate_tokens
from .base import Dialect

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from ..call import Call
    from ..config import ModelConfig
    from ..translate.neutral import StreamEvent

log = logging.getLogger("aisix.dialects.anthropic")

WHERE = "when this model's provider is not Anthropic"

# Read into the neutral request.
MAPPED_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences", "temperature",
    "top_p", "stream", "thinking", "output_config",
})
# Dropped on a translated call, named in the call's log line: they tune Anthropic's own service
# (metadata.user_id is Anthropic's abuse tracking: never passed on as a user field;
# service_tier, speed; context_management clears old tool results on Anthropic's side;
# cache_control (top level) asks for Anthropic's automatic prompt cache; diagnostics are
# Anthropic's cache reports) or name Anthropic betas. Without them the answer is still a
# correct answer. Any other field (container, mcp_servers, top_k, inference_geo, a field of a
# newer API version, ...) is dropped the same way: refusing it would break a client such as
# Claude Code on every call, for a setting only Anthropic's service could honour.
DROPPED_FIELDS = frozenset({
    "metadata", "service_tier", "context_management", "betas", "cache_control", "speed", "diagnostics",
})

# Content blocks from earlier turns that are the model's own reasoning: another provider
# cannot take them back, and the conversation means the same without them.
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})

# output_config.effort as a neutral effort ("xhigh" and "max" are above the neutral scale).
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
# Adaptive thinking without an effort: Anthropic's documented default effort is "high".
_ADAPTIVE_DEFAULT_EFFORT = "high"

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}

# The error type an Anthropic client expects for a status (docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}
# Error types kept as they are when an error already carries one (an upstream's overloaded_error
# mid-stream is a 502 for the gateway, but Claude Code retries on the type).
_SPECIFIC_ERROR_TYPES = frozenset({
    "authentication_error", "permission_error", "not_found_error", "request_too_large", "rate_limit_error",
    "overloaded_error", "billing_error", "timeout_error",
})


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def error_type(error: GatewayError) -> str:
    """The Anthropic error type for ``error``."""
    if error.type in _SPECIFIC_ERROR_TYPES:
        return error.type
    return _ERROR_TYPES.get(error.status) or ("invalid_request_error" if error.status < 500 else "api_error")


def _invalid(field: str, message: str) -> GatewayError:
    """A 400 worded as Anthropic words its validation errors: ``<field path>: <problem>``."""
    return bad_request(f"{field}: {message}", param=field)


# -- the dialect ----------------------------------------------------------------------


class AnthropicMessagesDialect(Dialect):
    name = "anthropic_messages"

    def credentials(self, headers: "Headers") -> str:
        key = (headers.get("x-api-key") or "").strip()
        if key:
            return key
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()  # Claude Code with ANTHROPIC_AUTH_TOKEN
        raise GatewayError(401, "x-api-key header is required", type="authentication_error",
                           code="invalid_api_key")

    def validate(self, body: dict[str, Any]) -> tuple[str, bool]:
        """The checks every Messages request needs, on either path.

        Kept light so that a pass-through call still gets Anthropic's own
        wording for anything deeper (Claude Code picks its fallbacks by it).
        A ``role: "system"`` message is let through for that reason: Anthropic
        refuses it in words Claude Code knows, and translation moves it into
        the system prompt.
        """
        model = body.get("model")
        if model is None:
            raise _invalid("model", "Field required")
        if not isinstance(model, str) or not model:
            raise _invalid("model", "Input should be a valid string")
        messages = body.get("messages")
        if messages is None:
            raise _invalid("messages", "Field required")
        if not isinstance(messages, list):
            raise _invalid("messages", "Input should be a valid list")
        if not messages:
            raise _invalid("messages", "at least one message is required")
        for index, message in enumerate(messages):
            where = f"messages.{index}"
            if not isinstance(message, dict):
                raise _invalid(where, "Input should be a valid dictionary")
            if message.get("role") not in ("user", "assistant", "system"):
                raise _invalid(f"{where}.role", "Input should be 'user' or 'assistant'")
            content = message.get("content")
            if not isinstance(content, (str, list)):
                raise _invalid(f"{where}.content", "Input should be a valid string or a list of content blocks")
            if isinstance(content, list):
                for number, block in enumerate(content):
                    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                        raise _invalid(f"{where}.content.{number}", "Input should be a content block with a type")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise _invalid("max_tokens", "Field required")
        if isinstance(max_tokens, float) and max_tokens.is_integer():
            max_tokens = int(max_tokens)  # 1024.0 is a whole number in JSON, as Anthropic's API takes it
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _invalid("max_tokens", "Input should be a valid integer")
        if max_tokens < 1:
            raise _invalid("max_tokens", "Input should be greater than or equal to 1")
        stream = body.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise _invalid("stream", "Input should be a valid boolean")
        return model, stream is True

    # -- translation ------------------------------------------------------------------

    def to_chat(self, body: dict[str, Any]) -> ChatRequest:
        notes: list[str] = []
        dropped = sorted(key for key in body if key not in MAPPED_FIELDS)
        if dropped:
            notes.append("dropped " + ", ".join(dropped))
        system, cache_system = _system(body.get("system"))
        system_parts = [system] if system else []
        messages = _messages(body["messages"], system_parts, notes)
        tools, cache_tools = _tools(body.get("tools"))
        choice, choice_name = _tool_choice(body.get("tool_choice"))
        effort, budget = _reasoning(body.get("thinking"), body.get("output_config"))
        if effort or budget:
            notes.append(f"thinking {_thinking_said(body)}")
        return ChatRequest(
            messages=messages,
            system="\n\n".join(system_parts) or None,
            tools=tools,
            tool_choice=choice,
            tool_choice_name=choice_name,
            max_tokens=None if body.get("max_tokens") is None else int(body["max_tokens"]),
            temperature=_number(body, "temperature"),
            top_p=_number(body, "top_p"),
            stop=_stop_sequences(body.get("stop_sequences")),
            stream=body.get("stream") is True,
            reasoning_effort=effort,
            reasoning_budget=budget,
            cache_system=cache_system,
            cache_tools=cache_tools,
            notes=notes,
        )

    # -- answers ------------------------------------------------------------------------

    def chat_answer(self, answer: ChatResponse, call: "Call") -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in answer.parts:
            if isinstance(part, TextPart):
                if part.text:
                    content.append({"type": "text", "text": part.text})
            else:
                content.append({"type": "tool_use", "id": part.id or _tool_id(), "name": part.name,
                                "input": _tool_input(part.arguments)})
        usage = answer.usage or _estimated_usage(
            call.body, len(answer.text) + sum(len(tool.arguments) for tool in answer.tool_calls))
        message_id = answer.id if answer.id and answer.id.startswith("msg_") else new_message_id()
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": call.model_name,
            "content": content,
            "stop_reason": _STOP_REASONS[answer.finish],
            "stop_sequence": None,
            "usage": _usage_body(usage),
        }

    def stream_encoder(self, call: "Call") -> "AnthropicStreamEncoder":
        return AnthropicStreamEncoder(call.model_name, estimate_input_tokens(call.body))

    # -- errors ---------------------------------------------------------------------------

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return {"type": "error", "error": {"type": error_type(error), "message": error.message}}

    def error_frame(self, error: GatewayError) -> bytes:
        return _frame("error", self.error_body(error))


# -- request pieces -------------------------------------------------------------------


def _system(raw: Any) -> tuple[str | None, bool]:
    """The system prompt's text, and whether a block of it is marked for caching."""
    if raw is None:
        return None, False
    if isinstance(raw, str):
        return raw, False
    if isinstance(raw, list):
        return "\n\n".join(_text_blocks(raw, "system")), any(_cached(block) for block in raw)
    raise _invalid("system", "Input should be a valid string or a list of text blocks")


def _cached(block: Any) -> bool:
    return isinstance(block, dict) and isinstance(block.get("cache_control"), dict)


def _thinking_said(body: dict[str, Any]) -> str:
    """What the client asked for, in a few words (for the log line)."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    said = [str(thinking.get("type"))] if thinking else []
    if thinking.get("budget_tokens"):
        said.append(f"budget {thinking['budget_tokens']}")
    if config.get("effort"):
        said.append(f"effort {config['effort']}")
    return " ".join(said)


def _text_blocks(blocks: list[Any], where: str) -> list[str]:
    """The texts of a list of text blocks (``cache_control`` markers ignored); other blocks: 400."""
    texts = []
    for index, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text" or not isinstance(block.get("text"), str):
            raise unsupported(f"{where}.{index}.type={kind}", "here: only text blocks are")
        texts.append(block["text"])
    return texts


def _messages(raw: list[dict[str, Any]], system_parts: list[str], notes: list[str]) -> list[Message]:
    messages: list[Message] = []
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results (Gemini wants the name)
    moved = thinking = 0
    for index, message in enumerate(raw):
        role, content, where = message["role"], message["content"], f"messages.{index}"
        if role == "system":  # not Anthropic's API, but clients send it: it joins the system prompt
            text = content if isinstance(content, str) else "\n\n".join(_text_blocks(content, f"{where}.content"))
            if text:
                system_parts.append(text)
            moved += 1
            continue
        if isinstance(content, str):
            parts: list[Part] = [TextPart(content)]
        else:
            parts = []
            for number, block in enumerate(content):
                part = _part(block, role, f"{where}.content.{number}", names)
                if part is None:
                    thinking += 1
                else:
                    parts.append(part)
        if parts:
            messages.append(Message(role, parts))
    if moved:
        notes.append(f"{moved} role=system message(s) moved into the system prompt")
    if thinking:
        notes.append(f"dropped {thinking} thinking block(s) of earlier turns")
    return messages


def _part(block: dict[str, Any], role: str, where: str, names: dict[str, str]) -> Part | None:
    kind = block["type"]
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _invalid(f"{where}.text", "Field required")
        return TextPart(block["text"], cache=_cached(block))
    if kind == "image":
        return _image(block.get("source"), f"{where}.source")
    if kind == "tool_use" and role == "assistant":
        call_id, name = block.get("id"), block.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise _invalid(where, "tool_use blocks need an id and a name")
        names[call_id] = name
        tool_input = block.get("input", {})
        return ToolCall(call_id, name, json.dumps(tool_input, separators=(",", ":"), ensure_ascii=False))
    if kind == "tool_result" and role == "user":
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str):
            raise _invalid(f"{where}.tool_use_id", "Field required")
        content = block.get("content", "")
        if isinstance(content, list):
            content = "\n\n".join(_text_blocks(content, f"{where}.content"))  # images in results: unsupported
        elif not isinstance(content, str):
            raise _invalid(f"{where}.content", "Input should be a valid string or a list of text blocks")
        return ToolResult(call_id, content, is_error=block.get("is_error") is True, name=names.get(call_id),
                          cache=_cached(block))
    if kind in _DROPPED_BLOCKS and role == "assistant":
        return None
    raise unsupported(f"{where}.type={kind}", WHERE)


def _image(source: Any, where: str) -> ImagePart:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        return ImagePart(media_type=source["media_type"], data=source["data"])
    if kind == "url" and isinstance(source.get("url"), str):
        return ImagePart(url=source["url"])
    raise unsupported(f"{where}.type={kind}", WHERE)


def _tools(raw: Any) -> tuple[list[Tool], bool]:
    """The tools, and whether one is marked for caching (the cache then ends after the tools)."""
    if raw is None:
        return [], False
    if not isinstance(raw, list):
        raise _invalid("tools", "Input should be a valid list")
    tools = []
    for index, tool in enumerate(raw):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid(where, "Input should be a valid dictionary")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            # Server tools (web_search_*, code_execution_*, bash_*, text_editor_*, ...) run on
            # Anthropic's side: no other provider can run them.
            raise bad_request(
                f"{where}: the server tool '{kind}' runs on Anthropic's side; it is not supported {WHERE}.",
                param=f"{where}.type", code="unsupported_parameter",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid(f"{where}.name", "Field required")
        schema = tool.get("input_schema")
        if schema is None:
            raise _invalid(f"{where}.input_schema", "Field required")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema", "Input should be a valid dictionary")
        description = tool.get("description")
        # defer_loading, strict, eager_input_streaming: Anthropic-side hints, left behind.
        tools.append(Tool(tool["name"], description if isinstance(description, str) else None, schema))
    return tools, any(_cached(tool) for tool in raw)


def _tool_choice(raw: Any) -> tuple[Any, str | None]:
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and raw.get("disable_parallel_tool_use") is True:
        raise unsupported("tool_choice.disable_parallel_tool_use", WHERE)
    if kind == "auto":
        return "auto", None
    if kind == "any":
        return "required", None
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(raw.get("name"), str):
        return "required", raw["name"]
    raise _invalid("tool_choice", "Input should be {'type': 'auto' | 'any' | 'none'} or {'type': 'tool', 'name'}")


def _reasoning(thinking: Any, output_config: Any) -> tuple[str | None, int | None]:
    """(effort, budget) from ``thinking`` and ``output_config.effort``."""
    effort = budget = None
    if output_config is not None:
        if not isinstance(output_config, dict):
            raise _invalid("output_config", "Input should be a valid dictionary")
        for key in output_config:
            if key != "effort":
                raise unsupported(f"output_config.{key}", WHERE)  # format: structured output
        if output_config.get("effort") is not None:
            effort = _EFFORTS.get(output_config["effort"])
            if effort is None:
                raise _invalid("output_config.effort", "Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
    if thinking is None:
        return effort, None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise _invalid("thinking.budget_tokens", "Input should be a positive integer")
        return effort, budget
    if kind == "adaptive":
        return effort or _ADAPTIVE_DEFAULT_EFFORT, None
    if kind == "disabled":
        return effort, None
    raise unsupported(f"thinking.type={kind}", WHERE)


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _invalid(name, "Input should be a valid number")
    return float(value)


def _stop_sequences(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise _invalid("stop_sequences", "Input should be a valid list of strings")
    return list(raw)


# -- answer pieces ---------------------------------------------------------------------


def _tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def _tool_input(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}  # a call without arguments: OpenAI models send ""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise upstream_error("The upstream answered a tool call whose arguments are not a JSON object.")
    return value


def _usage_body(usage: TokenUsage) -> dict[str, Any]:
    """Usage as a Message writes it: ``input_tokens`` leaves the cached tokens out."""
    fresh = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _estimated_usage(body: dict[str, Any], output_chars: int) -> TokenUsage:
    prompt = estimate_input_tokens(body)
    completion = max(estimate_tokens(output_chars), 1)
    return TokenUsage(prompt, completion, prompt + completion)


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """A Messages request's input tokens, estimated (never 0): system, messages, tools.

    Character based, as `aisix.usage` estimates, and counting what Anthropic
    counts: text, tool calls and results, tool definitions.
    """
    chars = 0

    def text(value: Any) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, list):
            return sum(block_chars(block) for block in value)
        return 0

    def block_chars(block: Any) -> int:
        if not isinstance(block, dict):
            return 0
        kind = block.get("type")
        if kind == "text":
            return len(block.get("text") or "") if isinstance(block.get("text"), str) else 0
        if kind == "tool_use":
            return len(block.get("name") or "") + len(json.dumps(block.get("input") or {}))
        if kind == "tool_result":
            return text(block.get("content"))
        if kind == "image":
            return 1600 * 4  # about what Anthropic counts for a typical image (~1,600 tokens)
        return 0

    chars += text(body.get("system"))
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    for message in messages:
        if isinstance(message, dict):
            chars += text(message.get("content"))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chars += len(json.dumps(tools))
    return max(estimate_tokens(chars) + TOKENS_PER_MESSAGE * len(messages), 1)


# -- streams -----------------------------------------------------------------------------


def _frame(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _dumps(payload) + b"\n\n"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


_PING = _frame("ping", {"type": "ping"})
_STOP = _frame("message_stop", {"type": "message_stop"})


class AnthropicStreamEncoder:
    """Neutral events as the Messages event stream, as the API sends it.

    ``message_start`` (with an estimated, non-zero ``input_tokens``: Claude Code
    refuses zeros, and the real count is only known at the end) and a ``ping``
    open it; text and each tool call are content blocks (started, deltas,
    stopped) in the order they come; ``message_delta`` (stop reason and the
    cumulative usage, real when the upstream reported it) and ``message_stop``
    close it in `end`, so usage reported after the finish still makes it.
    """

    def __init__(self, model: str, input_estimate: int) -> None:
        self.model = model
        self.input_estimate = max(input_estimate, 1)
        self.id = new_message_id()
        self._next_block = 0
        self._open: int | None = None  # the open content block's index
        self._open_tool: int | None = None  # the tool index of the open block, if it is a tool call
        self._tool_blocks: dict[int, int] = {}  # tool index -> content block index
        self._finish: str | None = None
        self._usage: TokenUsage | None = None
        self._output_chars = 0

    def start(self) -> bytes:
        message = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_estimate, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        return _frame("message_start", {"type": "message_start", "message": message}) + _PING

    def encode(self, event: "StreamEvent") -> bytes:
        kind = type(event)
        if kind is TextDelta:
            text: str = event.text  # type: ignore[union-attr]
            if not text:
                return b""
            self._output_chars += len(text)
            head = b""
            if self._open is None or self._open_tool is not None:
                head = self._begin({"type": "text", "text": ""}, None)
            return head + (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                           b'"delta":{"type":"text_delta","text":%s}}\n\n' % (self._open, _dumps(text)))
        if kind is ToolCallDelta:
            fragment: str = event.arguments  # type: ignore[union-attr]
            index: int = event.index  # type: ignore[union-attr]
            block = self._tool_blocks.get(index)
            if block is None:
                raise upstream_error(f"The upstream sent arguments for tool call {index} before starting it.")
            if block != self._open:
                raise upstream_error("The upstream interleaved the arguments of two tool calls.")
            if not fragment:
                return b""
            self._output_chars += len(fragment)
            return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                    b'"delta":{"type":"input_json_delta","partial_json":%s}}\n\n' % (block, _dumps(fragment)))
        if kind is ToolCallStart:
            start: ToolCallStart = event  # type: ignore[assignment]
            self._output_chars += len(start.name)
            block_start = {"type": "tool_use", "id": start.id or _tool_id(), "name": start.name, "input": {}}
            return self._begin(block_start, start.index)
        if kind is Finish:
            self._finish = _STOP_REASONS[event.reason]  # type: ignore[union-attr]
            return self._close()
        if kind is UsageReport:
            self._usage = event.usage  # type: ignore[union-attr]
            return b""
        raise TypeError(f"not a neutral stream event: {event!r}")

    def end(self) -> bytes:
        usage = self._usage
        if usage is None:  # the upstream never said: the estimate, as message_start did
            completion = max(estimate_tokens(self._output_chars), 1)
            usage = TokenUsage(self.input_estimate, completion, self.input_estimate + completion)
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": self._finish or "end_turn", "stop_sequence": None},
                 "usage": _usage_body(usage)}
        return self._close() + _frame("message_delta", delta) + _STOP

    def _begin(self, block: dict[str, Any], tool: int | None) -> bytes:
        head = self._close()
        index = self._open = self._next_block
        self._next_block += 1
        self._open_tool = tool
        if tool is not None:
            self._tool_blocks[tool] = index
        return head + _frame("content_block_start",
                             {"type": "content_block_start", "index": index, "content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._open_tool = self._open, None, None
        return b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % index


# -- pass-through --------------------------------------------------------------------------


class AnthropicPassthrough:
    """An Anthropic upstream's stream relayed to an Anthropic client, event by event, as it came.

    `feed` returns each complete upstream event's exact bytes (one client write
    each); on the way it reads what the gateway needs: ``usage`` (input from
    ``message_start``, then the cumulative ``message_delta`` usage;
    ``usage_final`` turns True with the latter), ``done`` (``message_stop``
    seen), ``output_chars`` (text, tool input and thinking characters relayed:
    the estimate's basis when a stream is cut before its final usage). An
    upstream ``error`` event raises `GatewayError` (the type, e.g.
    ``overloaded_error``, is kept for the client's error frame), carrying the
    frames that came before it in the same read (`failed_after`).
    """

    def __init__(self, model: "ModelConfig") -> None:
        self.model = model
        self.usage: TokenUsage | None = None
        self.usage_final = False
        self.done = False
        self.output_chars = 0
        self._events = SSEEvents(MAX_EVENT_BYTES)
        self._start_usage: TokenUsage | None = None

    def feed(self, data: bytes) -> list[bytes]:
        try:
            events = self._events.feed(data)
        except EventTooLarge:
            raise upstream_error(f"The upstream sent an event larger than the gateway relays "
                                 f"({MAX_EVENT_BYTES} bytes).") from None
        out: list[bytes] = []
        try:
            for raw, name, payload in events:
                if name in ("ping", "content_block_stop", "content_block_start", "message_stop"):
                    if name == "message_stop":
                        self.done = True
                    out.append(raw)
                    continue
                self._read(name, payload)
                out.append(raw)
        except GatewayError as error:
            raise failed_after(error, out) from None  # the frames before the error are still relayed
        return out

    def _read(self, name: str | None, payload: str) -> None:
        try:
            event = json.loads(payload) if payload else None
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            raise upstream_error("The upstream sent an event that is not a JSON object.")
        kind = event.get("type") or name
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "partial_json", "thinking"):
                    value = delta.get(key)
                    if isinstance(value, str):
                        self.output_chars += len(value)
        elif kind == "message_start":
            message = event.get("message")
            usage = usage_from_anthropic(message.get("usage")) if isinstance(message, dict) else None
            if usage is not None:
                self._start_usage = self.usage = usage
        elif kind == "message_delta":
            usage = usage_from_anthropic(event.get("usage"), self._start_usage)
            if usage is not None:
                self.usage, self.usage_final = usage, True
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = event.get("error") if isinstance(event.get("error"), dict) else {}
            raise in_stream_error(self.model, error.get("message"), type=error.get("type"), code=error.get("type"))


def passthrough_usage(body: bytes) -> TokenUsage | None:
    """The usage of a complete Messages answer from an Anthropic upstream (None if it has none)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    return usage_from_anthropic(parsed.get("usage")) if isinstance(parsed, dict) else None
