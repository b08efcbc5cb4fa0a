"""OpenAI-compatible upstreams: ``POST {base_url}/chat/completions`` and ``/embeddings``.

Two paths share this module:

* the raw pass-through (`build_request`): an OpenAI client's own body, with
  only the upstream model name (and, for a stream, ``stream_options``) set;
* the translated path (`chat_request` ... `stream_decoder`): a neutral
  `ChatRequest` from any other dialect, written as chat completions JSON, and
  the answer read back into neutral values.

Served by OpenAI itself and by every server that copies its API (vLLM,
Ollama, llama.cpp, DeepSeek, ...), so the translated path writes only what
those servers commonly accept (see `max_tokens_field`). Two fields follow the
model: ``reasoning_effort`` goes to reasoning models only (`is_reasoning_model`:
ids starting with o1, o3, o4, gpt-5 or gpt-oss; OpenAI answers any other model,
gpt-4o-mini included, with a 400 "Unrecognized request argument"), and
``prompt_cache_key`` (prompt caching is automatic at OpenAI; the key only
improves its hit rate) to OpenAI's own host only, as other servers may refuse
an unknown field. What is left out is named in the call's log line.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from ..config import ModelConfig
from ..errors import GatewayError, upstream_error
from ..streaming.sse import EventTooLarge, SSEDecoder, decode_chunk
from ..translate.neutral import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
    unsupported,
)
from ..usage import TokenUsage
from .base import Provider, failed_after, in_stream_error, json_body

# OpenAI's reasoning models refuse ``max_tokens`` ("use max_completion_tokens instead").
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
# Models that take ``reasoning_effort`` (gpt-oss: on the servers that host it, Groq, vLLM, ...).
_EFFORT_PREFIXES = (*_REASONING_PREFIXES, "gpt-oss")
# gpt-5 chat models are not reasoning models.
_NOT_REASONING = ("gpt-5-chat",)


def is_reasoning_model(model_id: str) -> bool:
    """Whether ``reasoning_effort`` may be sent to this model (by its id: Azure's deployment name)."""
    name = model_id.lower().rsplit("/", 1)[-1]
    return name.startswith(_EFFORT_PREFIXES) and not name.startswith(_NOT_REASONING)

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the deprecated single-function form
    "content_filter": "content_filter",
}


class OpenAIProvider(Provider):
    """One model behind an OpenAI-compatible API; everything fixed is computed once."""

    kind: ClassVar[str] = "openai"
    native_dialects: ClassVar[frozenset[str]] = frozenset({"openai_chat", "openai_embeddings"})
    serves: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings"})

    def __init__(self, model: ModelConfig) -> None:
        super().__init__(model)
        self.url = self.chat_url()
        self.embeddings_url = self.endpoint_url("embeddings")
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        self.stream_headers = {"content-type": "application/json", "accept": "text/event-stream"}
        for name, value in self.auth_headers().items():
            self.headers[name] = self.stream_headers[name] = value
        # Cleared, for this process, when the upstream refuses stream_options.
        self.accepts_stream_options = True
        self.max_tokens_field = self.choose_max_tokens_field()
        self.reasoning = is_reasoning_model(self.model.model)
        self.openai_host = (urlsplit(self.model.base_url).hostname or "") == "api.openai.com"

    # -- what subclasses (Azure) change ------------------------------------------------

    def chat_url(self) -> str:
        return self.model.chat_url

    def endpoint_url(self, endpoint: str) -> str:
        """The URL of ``endpoint`` ("chat/completions", "embeddings")."""
        return self.model.base_url.rstrip("/") + "/" + endpoint

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.model.api_key}"} if self.model.api_key else {}

    def choose_max_tokens_field(self) -> str:
        """Which body field carries the output budget on the translated path.

        ``max_tokens`` is what every OpenAI-compatible server (vLLM, Ollama,
        llama.cpp, DeepSeek, older Azure api-versions) understands. OpenAI itself
        deprecated it for ``max_completion_tokens`` and its reasoning models
        (o1, o3, o4, gpt-5) refuse it, so those get ``max_completion_tokens``:
        OpenAI's own host always, other hosts when the model id names one.
        """
        host = urlsplit(self.model.base_url).hostname or ""
        if host == "api.openai.com" or self.model.model.lower().startswith(_REASONING_PREFIXES):
            return "max_completion_tokens"
        return "max_tokens"

    # -- raw pass-through -----------------------------------------------------------------

    def build_request(
        self, client: httpx.AsyncClient, body: dict[str, Any], stream: bool, with_usage: bool
    ) -> httpx.Request:
        """The upstream request: the client's body with the upstream model name.

        Unknown fields pass through untouched. For a stream, ``with_usage`` asks
        the upstream for a final usage chunk (``stream_options.include_usage``).
        """
        upstream_body = dict(body)
        upstream_body["model"] = self.model.model
        if stream and with_usage:
            options = upstream_body.get("stream_options")
            upstream_body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return self.post(client, self.url, json.dumps(upstream_body, separators=(",", ":")).encode(),
                         self.stream_headers if stream else self.headers)

    def build_embeddings_request(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Request:
        """The raw pass-through of an OpenAI embeddings body, with the upstream model name."""
        upstream_body = dict(body)
        upstream_body["model"] = self.model.model
        return self.post(client, self.embeddings_url, json.dumps(upstream_body, separators=(",", ":")).encode(),
                         self.headers)

    @staticmethod
    def rejects_stream_options(status: int, body: bytes) -> bool:
        """Whether an upstream 400 is a strict server refusing ``stream_options``."""
        return status in (400, 422) and b"stream_options" in body

    # -- translated chat ---------------------------------------------------------------------

    def chat_request(self, client: httpx.AsyncClient, request: ChatRequest, stream: bool) -> httpx.Request:
        return self.post(client, self.url, json_body(self.chat_body(request, stream)),
                         self.stream_headers if stream else self.headers)

    def chat_body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        """The chat completions JSON for a neutral request."""
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            messages.extend(_messages(message))
        body: dict[str, Any] = {"model": self.model.model, "messages": messages}
        if request.tools:
            body["tools"] = [
                {"type": "function", "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": tool.parameters or {"type": "object", "properties": {}},
                }}
                for tool in request.tools
            ]
        if request.tool_choice_name:
            body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice_name}}
        elif request.tool_choice:
            body["tool_choice"] = request.tool_choice
        max_tokens = request.max_tokens if request.max_tokens is not None else self.model.max_tokens
        if max_tokens is not None:
            body[self.max_tokens_field] = max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.reasoning_effort or request.reasoning_budget:
            if self.reasoning and request.reasoning_effort:
                body["reasoning_effort"] = request.reasoning_effort
                request.notes.append(f"reasoning -> reasoning_effort {request.reasoning_effort}")
            elif self.reasoning:
                budget = request.reasoning_budget or 0
                effort = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
                body["reasoning_effort"] = effort
                request.notes.append(f"reasoning budget -> reasoning_effort {effort}")
            else:
                request.notes.append(f"reasoning dropped ({self.model.model} is not a reasoning model)")
        if request.cache_key and self.openai_host:
            body["prompt_cache_key"] = request.cache_key
        elif request.cache_key or request.cache_system or request.cache_tools:
            request.notes.append("prompt caching left to the upstream (automatic where it caches)")
        if stream:
            body["stream"] = True
            if self.accepts_stream_options:
                body["stream_options"] = {"include_usage": True}
        return body

    def chat_response(self, body: bytes) -> ChatResponse:
        answer = _json_object(body)
        choices = answer.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        parts: list[TextPart | ToolCall] = []
        content = message.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not content and isinstance(message.get("refusal"), str):
            content = message["refusal"]  # the model's own refusal is what it said
        if isinstance(content, str) and content:
            parts.append(TextPart(content))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.append(ToolCall(
                    id=str(call.get("id") or _call_id()), name=str(function.get("name") or ""),
                    arguments=_arguments_text(function.get("arguments")),
                ))
        finish = finish_reason(choice.get("finish_reason"), bool(message.get("tool_calls")))
        return ChatResponse(parts, finish, usage_from_openai(answer.get("usage")),
                            id=answer.get("id") if isinstance(answer.get("id"), str) else None)

    def stream_decoder(self) -> "OpenAIStreamDecoder":
        return OpenAIStreamDecoder(self.model)

    # -- embeddings ----------------------------------------------------------------------------

    def embeddings_request(self, client: httpx.AsyncClient, request: EmbeddingsRequest) -> httpx.Request:
        body: dict[str, Any] = {"model": self.model.model, "input": list(request.inputs), "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        return self.post(client, self.embeddings_url, json_body(body), self.headers)

    def embeddings_response(self, body: bytes) -> EmbeddingsResponse:
        answer = _json_object(body)
        data = answer.get("data")
        if not isinstance(data, list):
            raise upstream_error("The upstream's embeddings answer has no 'data' list.")
        items = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
        vectors = [item.get("embedding") for item in items]
        if not all(isinstance(v, list) for v in vectors):
            raise upstream_error("The upstream's embeddings answer is not a list of float vectors.")
        usage = None
        raw = answer.get("usage")
        if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
            prompt = raw["prompt_tokens"]
            usage = TokenUsage(prompt, 0, int(raw.get("total_tokens") or prompt))
        return EmbeddingsResponse(vectors, usage)  # type: ignore[arg-type]


# -- neutral -> chat completions ----------------------------------------------------------------


def _messages(message: Message) -> list[dict[str, Any]]:
    """One neutral message as chat completions messages (tool results become ``tool`` messages)."""
    if message.role == "assistant":
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ToolCall):
                calls.append({"id": part.id, "type": "function",
                              "function": {"name": part.name, "arguments": part.arguments or "{}"}})
            else:
                raise unsupported("image" if isinstance(part, ImagePart) else "tool_result",
                                  "in an assistant message by OpenAI-compatible upstreams")
        out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if calls:
            out["tool_calls"] = calls
        return [out]
    tools: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ToolResult):
            # A tool message must follow the assistant's tool calls at once: results go first.
            tools.append({"role": "tool", "tool_call_id": part.call_id, "content": part.content})
        elif isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": image_url(part)}})
        else:
            raise unsupported("tool_calls", "in a user message")
    out_messages = list(tools)
    if content:
        if len(content) == 1 and content[0]["type"] == "text":
            out_messages.append({"role": "user", "content": content[0]["text"]})
        else:
            out_messages.append({"role": "user", "content": content})
    return out_messages


def image_url(part: ImagePart) -> str:
    if part.data is not None:
        return f"data:{part.media_type or 'image/png'};base64,{part.data}"
    if part.url:
        return part.url
    raise unsupported("image", "without data or a URL")


# -- chat completions -> neutral ----------------------------------------------------------------


def finish_reason(raw: Any, has_tool_calls: bool = False) -> FinishReason:
    mapped = FINISH_REASONS.get(raw) if isinstance(raw, str) else None
    if mapped is None or (mapped == "stop" and has_tool_calls):
        return "tool_calls" if has_tool_calls else "stop"
    return mapped


def usage_from_openai(raw: Any) -> TokenUsage | None:
    """Chat completions usage, with cached and reasoning tokens where reported."""
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        prompt_details = raw.get("prompt_tokens_details")
        completion_details = raw.get("completion_tokens_details")
        cached = int(prompt_details.get("cached_tokens") or 0) if isinstance(prompt_details, dict) else 0
        reasoning = (int(completion_details.get("reasoning_tokens") or 0)
                     if isinstance(completion_details, dict) else 0)
    except (TypeError, ValueError):
        return None
    return TokenUsage(prompt, completion, prompt + completion, cached_tokens=cached, reasoning_tokens=reasoning)


class OpenAIStreamDecoder:
    """Chat completion chunks (SSE) in, neutral events out; ``done`` at ``[DONE]``."""

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.done = False
        self._sse = SSEDecoder()
        self._calls: dict[int, int] = {}  # the upstream's tool-call index -> the neutral one

    def feed(self, data: bytes) -> list[StreamEvent]:
        try:
            payloads = self._sse.feed(data)
        except EventTooLarge:
            raise upstream_error("The upstream sent a stream event larger than the gateway relays.") from None
        events: list[StreamEvent] = []
        try:
            for payload in payloads:
                if self.done or not payload:
                    continue
                if payload.strip() == "[DONE]":
                    self.done = True
                    continue
                chunk = decode_chunk(payload)
                if chunk is None:
                    raise upstream_error("The upstream sent a stream event that is not a JSON object.")
                self._chunk(chunk, events)
        except GatewayError as error:
            raise failed_after(error, events) from None
        return events

    def _chunk(self, chunk: dict[str, Any], events: list[StreamEvent]) -> None:
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
            raise in_stream_error(self.model, error.get("message"), error.get("type"), error.get("code"))
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one answer only (the translated path never asks for n > 1)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, events)
            reason = choice.get("finish_reason")
            if reason:
                events.append(Finish(finish_reason(reason, bool(self._calls))))
        usage = usage_from_openai(chunk.get("usage"))
        if usage is not None:
            events.append(UsageReport(usage))

    def _delta(self, delta: dict[str, Any], events: list[StreamEvent]) -> None:
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        elif not content and isinstance(delta.get("refusal"), str) and delta["refusal"]:
            events.append(TextDelta(delta["refusal"]))
        for fragment in delta.get("tool_calls") or []:
            if not isinstance(fragment, dict):
                continue
            function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
            upstream_index = fragment.get("index")
            if not isinstance(upstream_index, int):  # some servers send whole calls without an index
                upstream_index = len(self._calls) if fragment.get("id") or function.get("name") else max(
                    self._calls, default=0)
            index = self._calls.get(upstream_index)
            if index is None:
                index = self._calls[upstream_index] = len(self._calls)
                events.append(ToolCallStart(index, str(fragment.get("id") or _call_id()),
                                            str(function.get("name") or "")))
            arguments = function.get("arguments")
            if arguments:
                events.append(ToolCallDelta(index, _arguments_text(arguments)))


# -- small helpers ----------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise upstream_error("The upstream's answer is not JSON.") from None
    if not isinstance(parsed, dict):
        raise upstream_error("The upstream's answer is not a JSON object.")
    return parsed


def _arguments_text(arguments: Any) -> str:
    """Arguments as JSON text (a few servers send an object instead of a string)."""
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
