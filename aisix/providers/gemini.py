"""Google Gemini through the AI Studio API (``generativelanguage.googleapis.com``).

``POST {base_url}/v1beta/models/{model}:generateContent`` (and
``:streamGenerateContent?alt=sse``, ``:batchEmbedContents``, ``:countTokens``),
the key in ``x-goog-api-key``. Neutral messages become ``contents`` of
``user``/``model`` turns made of parts; the system prompt is
``systemInstruction``; tools are ``functionDeclarations`` whose parameters are
Gemini's OpenAPI-subset schema (`gemini_schema`).

Tool-call ids: Gemini's function calls carry no id (newer models may, and it
is then used), so one is made up. Gemini 3 models also put a
``thoughtSignature`` on function calls and refuse a later turn whose function
calls lack it; no client protocol has a place for it, so it travels inside the
tool-call id the client sees (``<id>__thought__<signature, URL-safe base64>``)
and is put back on the way in. A function call that comes back without one
(a history built elsewhere) gets Google's documented placeholder
``skip_thought_signature_validator`` on models that need one.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import re
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from ..config import ModelConfig
from ..errors import GatewayError, bad_request, upstream_error
from ..streaming.sse import EventTooLarge, SSEDecoder, decode_chunk
from ..translate.neutral import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
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
    unsupported,
)
from ..usage import TokenUsage
from .base import Provider, failed_after, in_stream_error, json_body, refusal

FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

# reasoning_effort as a thinking budget in tokens (Gemini 3 still takes thinkingBudget).
THINKING_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576}

SIGNATURE_MARK = "__thought__"
SKIP_SIGNATURE = "skip_thought_signature_validator"


class GeminiProvider(Provider):
    kind: ClassVar[str] = "gemini"
    serves: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings", "count_tokens"})

    def __init__(self, model: ModelConfig) -> None:
        super().__init__(model)
        root = model.base_url.rstrip("/")
        if not re.search(r"/v1(beta|alpha)?\d*$", root):
            root += "/v1beta"
        self.model_path = "models/" + model.model.removeprefix("models/")
        prefix = f"{root}/{quote(self.model_path, safe='/')}"
        self.generate_url = prefix + ":generateContent"
        self.stream_url = prefix + ":streamGenerateContent?alt=sse"
        self.embed_url = prefix + ":batchEmbedContents"
        self.count_url = prefix + ":countTokens"
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        self.stream_headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if model.api_key:
            self.headers["x-goog-api-key"] = self.stream_headers["x-goog-api-key"] = model.api_key
        # Gemini 3 and later refuse function calls in history without a thought signature.
        name = model.model.removeprefix("models/").lower()
        self.needs_signatures = not name.startswith(("gemini-1", "gemini-2", "gemma"))

    # -- chat ---------------------------------------------------------------------------

    def chat_request(self, client: httpx.AsyncClient, request: ChatRequest, stream: bool) -> httpx.Request:
        return self.post(client, self.stream_url if stream else self.generate_url, json_body(self.chat_body(request)),
                         self.stream_headers if stream else self.headers)

    def chat_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"contents": self.contents(request)}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        if request.tools:
            body["tools"] = [{"functionDeclarations": [_declaration(t.name, t.description, t.parameters)
                                                       for t in request.tools]}]
        tool_config = _tool_config(request)
        if tool_config:
            body["toolConfig"] = tool_config
        generation = self.generation_config(request)
        if generation:
            body["generationConfig"] = generation
        if request.cache_key or request.cache_system or request.cache_tools or any(
                getattr(part, "cache", False) for message in request.messages for part in message.parts):
            # Gemini's explicit cache is a resource made ahead (cachedContents), not a request marker;
            # its implicit cache applies by itself.
            request.notes.append("prompt caching left to Gemini's implicit cache")
        return body

    def contents(self, request: ChatRequest) -> list[dict[str, Any]]:
        contents: list[dict[str, Any]] = []
        names: dict[str, str] = {}  # tool-call id -> tool name, for the function responses after it
        for message in request.messages:
            parts: list[dict[str, Any]] = []
            if message.role == "assistant":
                signed = False
                for part in message.parts:
                    if isinstance(part, TextPart):
                        if part.text:
                            parts.append({"text": part.text})
                    elif isinstance(part, ToolCall):
                        names[part.id] = part.name
                        call_part: dict[str, Any] = {"functionCall": {"name": part.name,
                                                                      "args": _arguments(part)}}
                        signature = signature_of(part.id)
                        if signature is None and self.needs_signatures and not signed:
                            signature = SKIP_SIGNATURE  # only the first call of a turn is checked
                            request.notes.append("a tool call from another model's history sent with "
                                                 "Google's placeholder thought signature")
                        if signature is not None:
                            call_part["thoughtSignature"] = signature
                            signed = True
                        parts.append(call_part)
                    else:
                        raise unsupported("image" if isinstance(part, ImagePart) else "tool_result",
                                          "in an assistant message by Gemini")
                role = "model"
            else:
                for part in message.parts:
                    if isinstance(part, TextPart):
                        if part.text:
                            parts.append({"text": part.text})
                    elif isinstance(part, ImagePart):
                        parts.append(_image(part))
                    elif isinstance(part, ToolResult):
                        name = part.name or names.get(part.call_id)
                        if not name:
                            raise bad_request(
                                f"The tool result for call '{part.call_id}' follows no tool call with that id; "
                                "Gemini needs the tool's name.", param="tool_call_id", code="unsupported_parameter")
                        key = "error" if part.is_error else "result"
                        parts.append({"functionResponse": {"name": name, "response": {key: part.content}}})
                    else:
                        raise unsupported("tool_calls", "in a user message")
                role = "user"
            if parts:
                contents.append({"role": role, "parts": parts})
        if not contents:
            raise bad_request("Gemini needs at least one message with content.", param="messages")
        return contents

    def generation_config(self, request: ChatRequest) -> dict[str, Any]:
        config: dict[str, Any] = {}
        max_tokens = request.max_tokens if request.max_tokens is not None else self.model.max_tokens
        if max_tokens is not None:
            config["maxOutputTokens"] = max_tokens
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.stop:
            if len(request.stop) > 5:
                raise unsupported("stop", "with more than 5 sequences by Gemini")
            config["stopSequences"] = list(request.stop)
        if request.reasoning_budget is not None:
            config["thinkingConfig"] = {"thinkingBudget": request.reasoning_budget}
        elif request.reasoning_effort:
            budget = THINKING_BUDGETS.get(request.reasoning_effort)
            if budget is None:
                raise unsupported("reasoning_effort", f"as '{request.reasoning_effort}' by Gemini")
            config["thinkingConfig"] = {"thinkingBudget": budget}
        if "thinkingConfig" in config:
            budget = config["thinkingConfig"]["thinkingBudget"]
            request.notes.append(f"reasoning -> thinkingConfig.thinkingBudget {budget}")
        return config

    def chat_response(self, body: bytes) -> ChatResponse:
        answer = _json_object(body)
        reader = _AnswerReader()
        parts: list[TextPart | ToolCall] = []
        for item in reader.read(answer):
            if isinstance(item, str):
                if parts and isinstance(parts[-1], TextPart):
                    parts[-1] = TextPart(parts[-1].text + item)
                else:
                    parts.append(TextPart(item))
            else:
                parts.append(item)
        finish = reader.finish or "stop"
        return ChatResponse(parts, finish, usage_from_gemini(answer.get("usageMetadata")),
                            id=answer.get("responseId") if isinstance(answer.get("responseId"), str) else None)

    def stream_decoder(self) -> "GeminiStreamDecoder":
        return GeminiStreamDecoder(self.model)

    # -- embeddings -------------------------------------------------------------------------

    def embeddings_request(self, client: httpx.AsyncClient, request: EmbeddingsRequest) -> httpx.Request:
        requests = []
        for text in request.inputs:
            item: dict[str, Any] = {"model": self.model_path, "content": {"parts": [{"text": text}]}}
            if request.dimensions is not None:
                item["outputDimensionality"] = request.dimensions
            requests.append(item)
        return self.post(client, self.embed_url, json_body({"requests": requests}), self.headers)

    def embeddings_response(self, body: bytes) -> EmbeddingsResponse:
        answer = _json_object(body)
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, list):
            raise upstream_error("The upstream's embeddings answer has no 'embeddings' list.")
        vectors = [e.get("values") if isinstance(e, dict) else None for e in embeddings]
        if not all(isinstance(v, list) for v in vectors):
            raise upstream_error("The upstream's embeddings answer is not a list of float vectors.")
        # Gemini reports no token usage for embeddings (the gateway estimates it), unless it does.
        usage = None
        metadata = answer.get("usageMetadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("promptTokenCount"), int):
            usage = TokenUsage(metadata["promptTokenCount"], 0, metadata["promptTokenCount"])
        return EmbeddingsResponse(vectors, usage)  # type: ignore[arg-type]

    # -- token counting -------------------------------------------------------------------------

    def count_tokens_request(self, client: httpx.AsyncClient, request: ChatRequest) -> httpx.Request:
        # systemInstruction and tools are only taken inside a whole generateContentRequest.
        inner = {"model": self.model_path, **self.chat_body(request)}
        inner.pop("generationConfig", None)
        inner.pop("toolConfig", None)
        return self.post(client, self.count_url, json_body({"generateContentRequest": inner}), self.headers)

    def count_tokens_response(self, body: bytes) -> int:
        total = _json_object(body).get("totalTokens")
        if not isinstance(total, int):
            raise upstream_error("The upstream's token count has no 'totalTokens'.")
        return total

    # -- errors -----------------------------------------------------------------------------------

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """``{"error": {"code", "message", "status", "details"}}`` as the client's error.

        An invalid key is a 400 on Gemini (``API_KEY_INVALID``): the gateway's
        credentials, so treated as a 401. A 429's ``RetryInfo.retryDelay``
        becomes ``Retry-After`` when the header is missing.
        """
        error = _error_object(body)
        details = error.get("details") if isinstance(error.get("details"), list) else []
        reasons = {d.get("reason") for d in details if isinstance(d, dict)}
        if "API_KEY_INVALID" in reasons:
            status = 401
        if status == 429 and "retry-after" not in headers:
            for detail in details:
                delay = detail.get("retryDelay") if isinstance(detail, dict) else None
                if isinstance(delay, str) and delay.endswith("s"):
                    try:
                        headers = {**headers, "retry-after": str(max(1, math.ceil(float(delay[:-1]))))}
                    except ValueError:
                        pass
                    break
        status_name = error.get("status")
        return refusal(self.model, status, headers, message=error.get("message"),
                       code=status_name if isinstance(status_name, str) else None)


# -- neutral -> Gemini ------------------------------------------------------------------------


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        args = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        raise bad_request(f"The arguments of tool call '{call.id}' are not JSON.", param="tool_calls") from None
    if not isinstance(args, dict):
        raise bad_request(f"The arguments of tool call '{call.id}' are not a JSON object.", param="tool_calls")
    return args


def _image(part: ImagePart) -> dict[str, Any]:
    """An image part: inline bytes, or a URL Gemini fetches itself (https:// and gs:// only)."""
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
    url = part.url or ""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        if not header.endswith(";base64"):
            raise unsupported("image_url", "as a data: URL that is not base64 by Gemini")
        return {"inlineData": {"mimeType": header[5:-7] or "image/png", "data": data}}
    if url.startswith(("https://", "gs://")):
        media_type = part.media_type or mimetypes.guess_type(urlsplit(url).path)[0] or "image/jpeg"
        return {"fileData": {"mimeType": media_type, "fileUri": url}}
    raise unsupported("image_url", "as a plain http:// URL by Gemini (it fetches https:// and gs:// URLs only)")


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    if request.tool_choice_name:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [request.tool_choice_name]}}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(request.tool_choice or "")
    return {"functionCallingConfig": {"mode": mode}} if mode else None


def _declaration(name: str, description: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": name}
    if description:
        declaration["description"] = description
    schema = gemini_schema(parameters or {})
    if schema.get("properties"):  # Gemini refuses an OBJECT with no properties: a tool without arguments
        declaration["parameters"] = schema
    return declaration


# JSON Schema keywords Gemini's Schema takes as they are (besides those converted below).
_KEPT = ("description", "nullable", "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength",
         "pattern", "default", "propertyOrdering", "minProperties", "maxProperties", "example")
_FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as Gemini's OpenAPI-3.0 subset.

    Converted: ``$ref`` to ``$defs``/``definitions`` inlined (a recursive one is
    a 400), ``allOf`` merged, ``oneOf`` read as ``anyOf``, a ``null`` member or
    type becomes ``nullable``, a type list becomes ``anyOf``, ``const`` becomes a
    one-value ``enum``, types are upper-cased. Kept with a note in the
    description: a non-string ``enum`` and an unsupported ``format``. Dropped (Gemini
    refuses them): ``additionalProperties``, ``$schema``, ``$id``, ``title``,
    ``examples``, ``exclusiveMinimum``/``exclusiveMaximum``, ``not``,
    ``patternProperties`` and every other keyword not listed in `_KEPT`.
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in schema[key].items()})
    return _convert(schema, defs, ())


def _convert(node: Any, defs: dict[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    node = dict(node)
    ref = node.pop("$ref", None)
    if isinstance(ref, str):
        if ref in refs:
            raise unsupported("tools[].parameters", f"with the recursive schema '{ref}' by Gemini")
        if ref not in defs:
            raise unsupported("tools[].parameters", f"with the schema reference '{ref}' by Gemini")
        return _convert({**defs[ref], **node}, defs, refs + (ref,))
    for member in node.pop("allOf", None) or []:
        if isinstance(member, dict):
            merged = {**member, **node}
            merged["properties"] = {**(member.get("properties") or {}), **(node.get("properties") or {})}
            merged["required"] = [*(member.get("required") or []), *(node.get("required") or [])]
            node = {k: v for k, v in merged.items() if v or k not in ("properties", "required")}
    if "$ref" in node:
        return _convert(node, defs, refs)
    out: dict[str, Any] = {}
    notes: list[str] = []
    alternatives = node.get("anyOf") or node.get("oneOf")
    if isinstance(alternatives, list):
        members = [m for m in alternatives if isinstance(m, dict)]
        if any(m.get("type") == "null" for m in members):
            out["nullable"] = True
            members = [m for m in members if m.get("type") != "null"]
        converted = [_convert(m, defs, refs) for m in members]
        if len(converted) == 1:
            out.update({k: v for k, v in converted[0].items() if k not in out or k == "nullable"})
        elif converted:
            out["anyOf"] = converted
    kind = node.get("type")
    if isinstance(kind, list):
        types = [t for t in kind if t != "null"]
        if "null" in kind:
            out["nullable"] = True
        if len(types) == 1:
            kind = types[0]
        else:
            out["anyOf"] = [{"type": str(t).upper()} for t in types]
            kind = None
    if isinstance(kind, str):
        out["type"] = "STRING" if kind == "null" else kind.upper()
        if kind == "null":
            out["nullable"] = True
    for key in _KEPT:
        if key in node and (key not in out or key == "description"):
            out[key] = node[key]
    enum = node.get("enum")
    if "const" in node:
        enum = [node["const"]]
    if isinstance(enum, list):
        if all(isinstance(v, str) for v in enum):
            out["enum"] = enum
            out.setdefault("type", "STRING")
        else:
            notes.append("one of " + ", ".join(json.dumps(v) for v in enum))
    fmt = node.get("format")
    if isinstance(fmt, str):
        if fmt in _FORMATS.get(out.get("type", ""), ()):
            out["format"] = fmt
        else:
            notes.append(f"format: {fmt}")
    properties = node.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {name: _convert(value, defs, refs) for name, value in properties.items()}
        out.setdefault("type", "OBJECT")
        required = [r for r in node.get("required") or [] if r in properties]
        if required:
            out["required"] = required
    if "items" in node:
        out["items"] = _convert(node["items"], defs, refs)
        out.setdefault("type", "ARRAY")
    if notes:
        out["description"] = (str(out["description"]) + " " if out.get("description") else "") + f"({'; '.join(notes)})"
    return out


# -- Gemini -> neutral -------------------------------------------------------------------------


def usage_from_gemini(raw: Any) -> TokenUsage | None:
    """usageMetadata: output is ``candidatesTokenCount + thoughtsTokenCount`` (thinking is billed as output)."""
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("promptTokenCount") or 0) + int(raw.get("toolUsePromptTokenCount") or 0)
        thoughts = int(raw.get("thoughtsTokenCount") or 0)
        completion = int(raw.get("candidatesTokenCount") or 0) + thoughts
        cached = int(raw.get("cachedContentTokenCount") or 0)
    except (TypeError, ValueError):
        return None
    return TokenUsage(prompt, completion, prompt + completion, cached_tokens=cached, reasoning_tokens=thoughts)


def finish_reason(raw: Any, has_tool_calls: bool) -> FinishReason:
    mapped = FINISH_REASONS.get(raw, "stop") if isinstance(raw, str) else "stop"
    return "tool_calls" if mapped == "stop" and has_tool_calls else mapped


def tool_call_id(function_call: dict[str, Any], part: dict[str, Any]) -> str:
    """The id the client sees: Gemini's own (or a new one), with the thought signature inside."""
    base = function_call.get("id") if isinstance(function_call.get("id"), str) and function_call["id"] else None
    base = base or "call_" + uuid.uuid4().hex[:24]
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        return base + SIGNATURE_MARK + signature.replace("+", "-").replace("/", "_").rstrip("=")
    return base


def signature_of(call_id: str) -> str | None:
    """The thought signature a tool-call id carries (standard base64), or None."""
    _, mark, encoded = call_id.partition(SIGNATURE_MARK)
    if not mark or not encoded:
        return None
    encoded = encoded.replace("-", "+").replace("_", "/")
    return encoded + "=" * (-len(encoded) % 4)


class _AnswerReader:
    """Reads one GenerateContentResponse (whole, or a stream's chunk): text pieces and tool calls."""

    def __init__(self) -> None:
        self.tool_calls = 0
        self.finish: FinishReason | None = None

    def read(self, answer: dict[str, Any]) -> list[str | ToolCall]:
        out: list[str | ToolCall] = []
        candidates = answer.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            feedback = answer.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self.finish = "content_filter"  # the prompt itself was blocked: no candidate
            return out
        content = candidate.get("content")
        for part in (content.get("parts") if isinstance(content, dict) else None) or []:
            if not isinstance(part, dict) or part.get("thought") is True:
                continue  # thinking summaries are not the answer
            if isinstance(part.get("text"), str) and part["text"]:
                out.append(part["text"])
            call = part.get("functionCall")
            if isinstance(call, dict):
                args = call.get("args") if isinstance(call.get("args"), dict) else {}
                out.append(ToolCall(tool_call_id(call, part), str(call.get("name") or ""),
                                    json.dumps(args, separators=(",", ":"), ensure_ascii=False)))
                self.tool_calls += 1
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            self.finish = finish_reason(reason, self.tool_calls > 0)
        return out


class GeminiStreamDecoder:
    """``streamGenerateContent?alt=sse`` in, neutral events out; done at the chunk with a finishReason.

    Each SSE event is a whole GenerateContentResponse; function calls come
    whole, so each is a `ToolCallStart` and one `ToolCallDelta` with all the
    arguments. Usage is read from the last ``usageMetadata`` and reported once, at the end.
    """

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.done = False
        self._sse = SSEDecoder()
        self._reader = _AnswerReader()
        self._usage: TokenUsage | None = None
        self._calls = 0

    def feed(self, data: bytes) -> list[StreamEvent]:
        try:
            payloads = self._sse.feed(data)
        except EventTooLarge:
            raise upstream_error("The upstream sent a stream event larger than the gateway relays.") from None
        events: list[StreamEvent] = []
        for payload in payloads:
            if self.done or not payload.strip():
                continue
            chunk = decode_chunk(payload)
            if chunk is None:
                raise failed_after(upstream_error("The upstream sent a stream event that is not a JSON object."),
                                   events)
            if "error" in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                raise failed_after(in_stream_error(self.model, error.get("message"),
                                                   code=error.get("status") or error.get("code")), events)
            self._usage = usage_from_gemini(chunk.get("usageMetadata")) or self._usage
            for item in self._reader.read(chunk):
                if isinstance(item, str):
                    events.append(TextDelta(item))
                else:
                    index = self._calls
                    self._calls += 1
                    events.append(ToolCallStart(index, item.id, item.name))
                    events.append(ToolCallDelta(index, item.arguments))
            if self._reader.finish is not None:
                events.append(Finish(self._reader.finish))
                if self._usage is not None:
                    events.append(UsageReport(self._usage))
                self.done = True
        return events


# -- small helpers ---------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise upstream_error("The upstream's answer is not JSON.") from None
    if not isinstance(parsed, dict):
        raise upstream_error("The upstream's answer is not a JSON object.")
    return parsed


def _error_object(body: bytes) -> dict[str, Any]:
    """The ``error`` object of a Gemini error body (also inside the list a JSON stream answers with)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}
