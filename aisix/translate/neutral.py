"""The neutral model of a chat call: what every dialect parses into and every provider builds from.

Shaped after the richest of the protocols (Anthropic's content blocks, which
Bedrock's Converse and Gemini's parts resemble): a message is a role and a
list of parts; tool results are parts of the next ``user`` message; the
system prompt is apart. Dialects and providers map their own wire shapes to
these types and nothing else, so N dialects and M providers need N + M
mappings, not N × M.

Anything a dialect cannot put here, or a provider cannot express, is refused
with a 400 naming the field (`unsupported`), unless the answer is right
without it: then it is dropped (or mapped to the provider's nearest setting)
and named in ``ChatRequest.notes``, which the bridge logs as one line per
call. Never dropped in silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from ..errors import GatewayError, bad_request
from ..usage import TokenUsage

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


# -- request ----------------------------------------------------------------


@dataclass(slots=True)
class TextPart:
    text: str
    cache: bool = False  # the client marked the prompt up to here for caching (Anthropic's cache_control)


@dataclass(slots=True)
class ImagePart:
    """An image given inline (base64 ``data`` with its ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(slots=True)
class ToolCall:
    """The model asking for a tool: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class ToolResult:
    """What a tool returned, for the call ``call_id``; text parts only (images in results are refused)."""

    call_id: str
    content: str
    is_error: bool = False
    name: str | None = None  # the tool's name, where the client's protocol says it (Gemini needs it)
    cache: bool = False  # marked for caching, as `TextPart.cache`


Part = Union[TextPart, ImagePart, ToolCall, ToolResult]


@dataclass(slots=True)
class Message:
    role: Literal["user", "assistant"]
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON Schema of the arguments object


@dataclass(slots=True)
class ChatRequest:
    """One chat call, whatever protocol the client spoke."""

    messages: list[Message]
    system: str | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | None = None
    tool_choice_name: str | None = None  # a specific tool the model must call
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    # Reasoning the client asked for, as a budget in tokens and/or an effort level
    # ("low", "medium", "high"); providers map what they can and ignore the rest.
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    # Prompt caching the client asked for: explicit breakpoints (Anthropic's cache_control on
    # the system prompt, on the tools, on parts), or a cache key (OpenAI's prompt_cache_key).
    # Providers use their own caching where they have one (`cache_breakpoints`), else drop it.
    cache_system: bool = False
    cache_tools: bool = False
    cache_key: str | None = None
    # What translating this call dropped or mapped, in a few words each: the bridge logs them
    # as one line per call (dialects add theirs while reading, providers while building).
    notes: list[str] = field(default_factory=list)


# -- complete answer ---------------------------------------------------------


@dataclass(slots=True)
class ChatResponse:
    """A complete answer: text and tool calls in the order the model produced them."""

    parts: list[TextPart | ToolCall]
    finish: FinishReason
    usage: TokenUsage | None
    id: str | None = None  # the upstream's id, where it gives one

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.parts if isinstance(p, ToolCall)]


# -- stream events -------------------------------------------------------------
# A provider's stream decoder turns upstream bytes into these, in order; a
# dialect's encoder turns them into the client's frames. Tool-call fragments
# are tied together by ``index`` (the tool call's position among this answer's
# tool calls, from 0). ``Finish`` and ``UsageReport`` may come in either order,
# and usage may be reported more than once (cumulative: the last one wins).


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str  # a fragment of the arguments' JSON text


@dataclass(slots=True)
class Finish:
    reason: FinishReason


@dataclass(slots=True)
class UsageReport:
    usage: TokenUsage


StreamEvent = Union[TextDelta, ToolCallStart, ToolCallDelta, Finish, UsageReport]


# -- embeddings ----------------------------------------------------------------


@dataclass(slots=True)
class EmbeddingsRequest:
    inputs: list[str]
    dimensions: int | None = None


@dataclass(slots=True)
class EmbeddingsResponse:
    vectors: list[list[float]]
    usage: TokenUsage | None


@dataclass(slots=True)
class CacheBreakpoints:
    """Where a provider with explicit prompt caching puts its markers: after the system prompt, after
    the tools, and after the parts at (message index, part index), in the request's order."""

    system: bool = False
    tools: bool = False
    parts: list[tuple[int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.system or self.tools or bool(self.parts)

    def count(self) -> int:
        return int(self.system) + int(self.tools) + len(self.parts)


def cache_breakpoints(request: ChatRequest, limit: int = 4) -> CacheBreakpoints:
    """The cache breakpoints for ``request``, at most ``limit`` (Anthropic's and Bedrock's maximum: 4).

    The client's own marks when it gave some (the latest part marks are kept when there are
    too many: the longest prefix is the one worth caching); with only a cache key (Codex's
    ``prompt_cache_key``) the usual two: the system prompt and the end of the conversation.
    """
    marks = CacheBreakpoints(request.cache_system, request.cache_tools)
    for m, message in enumerate(request.messages):
        for p, part in enumerate(message.parts):
            if getattr(part, "cache", False):
                marks.parts.append((m, p))
    if not marks and request.cache_key and request.messages:
        marks.system = bool(request.system)
        last = len(request.messages) - 1
        marks.parts.append((last, len(request.messages[last].parts) - 1))
    room = limit - int(marks.system) - int(marks.tools)
    if len(marks.parts) > room:
        marks.parts = marks.parts[len(marks.parts) - room:] if room > 0 else []
    return marks


def unsupported(field_name: str, where: str) -> GatewayError:
    """The 400 for a request field that cannot be carried to (or from) the other side."""
    return bad_request(f"'{field_name}' is not supported {where}.", param=field_name, code="unsupported_parameter")


def estimate_input_tokens(request: ChatRequest) -> int:
    """A character-based estimate of a request's input tokens (4 characters a token, as `aisix.usage`)."""
    chars = len(request.system or "")
    for message in request.messages:
        chars += 16  # role and framing
        for part in message.parts:
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ToolCall):
                chars += len(part.name) + len(part.arguments)
            elif isinstance(part, ToolResult):
                chars += len(part.content)
            elif isinstance(part, ImagePart):
                chars += 4 * 1_000  # an image costs on the order of a thousand tokens
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description or "") + len(str(tool.parameters))
    return -(-chars // 4)
