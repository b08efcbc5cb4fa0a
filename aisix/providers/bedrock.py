"""Amazon Bedrock through the Converse API: ``POST {base_url}/model/{modelId}/converse[-stream]``.

One request shape for every model Bedrock hosts (Nova, Claude, Llama, Mistral, ...).
Wire format: the Bedrock Runtime API reference (Converse, ConverseStream) and
botocore's ``bedrock-runtime`` service model, which the mock and tests follow.

Auth. SigV4 (service ``bedrock``, the model's region) with botocore's signer over
the exact bytes and headers sent (``host``, ``content-type``, ``x-amz-date``,
``x-amz-security-token``), credentials from botocore's standard chain: on Lambda
the function role's. The chain is resolved on the first call, not at import or
build time: that keeps start-up free of I/O (IMDS look-ups can take seconds on a
machine without credentials) and, with SnapStart, never bakes a snapshot's
credentials into every restored instance. botocore refreshes temporary
credentials itself; a refresh that needs I/O runs off the event loop. A model
with ``api_key_env`` (a Bedrock API key) is sent ``Authorization: Bearer`` instead,
unsigned.

Translation, and what cannot be carried:

* ``max_tokens``: the request's, else the model's ``max_tokens``; else, for
  Anthropic models, the Anthropic provider's rule (`claude_max_tokens`: 32,000,
  or an older model's lower limit), and for the others none at all: Converse's
  documented default is "the maximum allowed value for the model" (API
  reference, InferenceConfiguration), which no fixed number here could match
  across Nova, Llama, Mistral, ... (each default logged at debug and named in
  the call's log line).
* images: inline base64 (``png``, ``jpeg``, ``gif``, ``webp``) only; a URL is a 400.
* ``tool_choice``: ``auto`` → ``{"auto": {}}``, ``required`` → ``{"any": {}}``, a
  named tool → ``{"tool": {"name"}}``. Converse has no "none": the tools are left
  out, so the model cannot call one. Bedrock refuses tool blocks in a conversation
  that has no tool configuration, so ``none`` with tool calls in the history is a 400.
* tool results: ``status: "error"`` for a failed tool; a successful one carries no
  status (the field is Anthropic-only on Bedrock, success is its meaning when absent).
* reasoning: ``additionalModelRequestFields.thinking`` for Anthropic models (model id
  containing ``anthropic``), with the budget asked for or `EFFORT_BUDGETS` (left out,
  as on Anthropic's own API, when the turn continues a tool call whose thinking block
  the history cannot carry, or the tool choice is forced); ``reasoningConfig``
  (``maxReasoningEffort`` low/medium/high) for Amazon Nova 2 models (id containing
  ``nova-2``, "Extended thinking in Amazon Nova 2"); dropped for other models, which
  take none through Converse. Reasoning blocks in answers are not text and are not relayed.
* prompt caching: the client's cache breakpoints (Anthropic's ``cache_control``) or
  cache key (``prompt_cache_key``) become ``cachePoint`` blocks after the system
  prompt, the marked content blocks and (Anthropic models only) the tools, at most 4,
  for the models Bedrock caches for (`takes_cache_points`: Claude 3.5 Haiku, 3.7
  Sonnet and later, Amazon Nova; Bedrock's "Prompt caching" guide). Other models get
  none: a cache step never fails a call. A breakpoint before a model's minimum prefix
  is not an error on Bedrock either, just not cached.
* usage: Bedrock's ``inputTokens`` excludes cache reads and writes; ``prompt_tokens``
  includes them, as everywhere in AISIX.

Stream: ``application/vnd.amazon.eventstream`` frames, decoded with botocore's
``EventStreamBuffer``. Bedrock sends ``messageStop`` (the stop reason) and then
``metadata`` (usage): the decoder is ``done`` once it has seen both, so a stream
cut between them is treated as cut off and its usage estimated, never taken for
complete without its usage. Exception frames (``:message-type: exception``) inside
the 200 are raised as `GatewayError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.eventstream import EventStreamBuffer, ParserError

from ..call import TokenUsage
from ..config import ModelConfig
from ..errors import GatewayError, bad_request
from ..translate.neutral import (
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
    unsupported,
)
from .anthropic import MIN_THINKING_BUDGET, claude_max_tokens, claude_refuses_thinking
from .base import Provider, failed_after, in_stream_error, json_body, refusal

log = logging.getLogger("aisix.providers.bedrock")

# Thinking budgets for a reasoning effort without a budget (Anthropic's minimum is 1024).
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
SIGNING_NAME = "bedrock"  # botocore's signingName for bedrock-runtime
STREAM_MEDIA_TYPE = "application/vnd.amazon.eventstream"

CACHE_POINT = {"cachePoint": {"type": "default"}}
# Anthropic models on Bedrock without prompt caching (older than Claude 3.5 Haiku / 3.7 Sonnet).
_UNCACHED_CLAUDE = ("claude-3-haiku", "claude-3-sonnet", "claude-3-opus", "claude-3-5-sonnet", "claude-v2",
                    "claude-instant")
# reasoningConfig efforts for Nova 2 (a budget in tokens is read as the nearest effort).
_NOVA_EFFORTS = ("low", "medium", "high")


def takes_cache_points(model_id: str) -> bool:
    """Whether Bedrock caches prompts for this model (cachePoint blocks), from its id."""
    name = model_id.lower()
    if "anthropic.claude" in name:
        return not any(old in name for old in _UNCACHED_CLAUDE)
    return "amazon.nova" in name


_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


class BedrockProvider(Provider):
    kind: ClassVar[str] = "bedrock"
    serves: ClassVar[frozenset[str]] = frozenset({"chat"})
    stream_media_type: ClassVar[str] = STREAM_MEDIA_TYPE

    def __init__(self, model: ModelConfig, *, credentials: Any = None) -> None:
        """``credentials``: botocore credentials to sign with instead of the standard chain (tests)."""
        super().__init__(model)
        if not model.region:
            raise ValueError(f"model {model.name!r}: Bedrock needs a region")
        self.region = model.region
        # The model id as one path segment: "/" escaped (ARNs of inference profiles), ":" kept as it is
        # (as Anthropic's Bedrock SDK sends it): aiohttp's URL normalising turns "%3A" back into ":"
        # after signing, and a path that differs from the signed one fails SigV4.
        base = model.base_url.rstrip("/") + "/model/" + quote(model.model, safe=":")
        self.url = base + "/converse"
        self.stream_url = base + "/converse-stream"
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        self.stream_headers = {"content-type": "application/json", "accept": STREAM_MEDIA_TYPE}
        if model.api_key:
            self.headers["authorization"] = self.stream_headers["authorization"] = f"Bearer {model.api_key}"
        name = model.model.lower()
        self.thinking = "anthropic" in name
        self.nova_reasoning = "nova-2" in name
        self.caches = takes_cache_points(model.model)
        self.default_max_tokens: tuple[int, str] | None = claude_max_tokens(model) if self.thinking else (
            (model.max_tokens, "the models file's max_tokens") if model.max_tokens else None)
        self._credentials = credentials
        self._resolving: asyncio.Lock | None = None

    # -- chat -----------------------------------------------------------------

    def chat_request(self, client: httpx.AsyncClient, request: ChatRequest, stream: bool) -> httpx.Request:
        return client.build_request(
            "POST",
            self.stream_url if stream else self.url,
            content=json_body(self.converse_body(request)),
            headers=self.stream_headers if stream else self.headers,
            timeout=self.timeout,
        )

    def converse_body(self, request: ChatRequest) -> dict[str, Any]:
        """The Converse request body for a neutral request (the same for both endpoints)."""
        notes = request.notes
        marks = cache_breakpoints(request) if self.caches else None
        if marks is None and (request.cache_system or request.cache_tools or request.cache_key
                              or any(getattr(p, "cache", False) for m in request.messages for p in m.parts)):
            notes.append("prompt caching dropped (Bedrock caches no prompts for this model)")
        body: dict[str, Any] = {"messages": _messages(request, set(marks.parts) if marks else set())}
        if request.system:
            body["system"] = [{"text": request.system}, CACHE_POINT] if marks and marks.system else [
                {"text": request.system}]
        max_tokens = request.max_tokens
        if not max_tokens and self.default_max_tokens:
            max_tokens, source = self.default_max_tokens
            log.debug("model %s: no max_tokens in the request, sending %d (%s)", self.model.name, max_tokens, source)
            notes.append(f"maxTokens {max_tokens} ({source})")
        elif not max_tokens:
            notes.append("no maxTokens (Converse's default: the model's maximum)")
        fields = self._reasoning(request)
        if fields and "thinking" in fields:
            budget = fields["thinking"]["budget_tokens"]
            if max_tokens and max_tokens <= budget:
                max_tokens = budget + max_tokens  # the budget counts inside maxTokens: room to answer
        if fields:
            body["additionalModelRequestFields"] = fields
        inference: dict[str, Any] = {}
        if max_tokens:
            inference["maxTokens"] = max_tokens
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        if request.top_p is not None:
            inference["topP"] = request.top_p
        if request.stop:
            inference["stopSequences"] = list(request.stop)
        if inference:
            body["inferenceConfig"] = inference
        tool_config = _tool_config(request, body["messages"])
        if tool_config:
            if marks and marks.tools and self.thinking:  # Nova takes cache points in system and messages only
                tool_config["tools"].append(CACHE_POINT)
            body["toolConfig"] = tool_config
        if marks:
            notes.append(f"prompt caching: {marks.count()} cachePoint(s)")
        return body

    def _reasoning(self, request: ChatRequest) -> dict[str, Any] | None:
        if request.reasoning_budget is None and request.reasoning_effort is None:
            return None
        effort = str(request.reasoning_effort).lower() if request.reasoning_effort is not None else None
        if effort in ("none", "minimal") and request.reasoning_budget is None:
            request.notes.append(f"reasoning effort {effort}: no reasoning")
            return None
        if self.nova_reasoning:
            if effort not in _NOVA_EFFORTS:
                budget = request.reasoning_budget or EFFORT_BUDGETS["high"]
                effort = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
            request.notes.append(f"reasoning -> reasoningConfig {effort}")
            return {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": effort}}
        if not self.thinking:
            request.notes.append("reasoning dropped (this Bedrock model takes none through Converse)")
            return None
        budget = request.reasoning_budget
        if budget is None:
            budget = EFFORT_BUDGETS.get(str(effort))
            if budget is None:
                raise unsupported("reasoning_effort", f"with the value {request.reasoning_effort!r} by Bedrock")
        if claude_refuses_thinking(request):
            return None
        budget = max(int(budget), MIN_THINKING_BUDGET)
        request.notes.append(f"reasoning -> thinking budget_tokens {budget}")
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}

    def chat_response(self, body: bytes) -> ChatResponse:
        try:
            answer = json.loads(body)
            content = answer["output"]["message"]["content"]
            parts: list[TextPart | ToolCall] = []
            for block in content:
                if "text" in block:
                    parts.append(TextPart(block["text"]))
                elif "toolUse" in block:
                    use = block["toolUse"]
                    parts.append(ToolCall(use["toolUseId"], use["name"], json.dumps(use.get("input", {}))))
                # reasoningContent and other blocks are not part of the answer's text.
            stop = answer.get("stopReason")
            usage = answer.get("usage")
        except (ValueError, KeyError, TypeError, RecursionError):
            raise GatewayError(502, f"The upstream for '{self.model.name}' sent an answer that is not a "
                                    f"Bedrock Converse response.", type="api_error",
                               code="upstream_error") from None
        return ChatResponse(parts=parts, finish=finish_reason(stop), usage=token_usage(usage))

    def stream_decoder(self) -> "BedrockStreamDecoder":
        return BedrockStreamDecoder(self.model)

    # -- every call ----------------------------------------------------------------

    async def prepare(self, request: httpx.Request) -> httpx.Request:
        """Sign with SigV4, unless the model uses a Bedrock API key (sent as Bearer when built)."""
        if self.model.api_key:
            return request
        frozen = await self._frozen_credentials()
        return sign(request, frozen, self.region)

    async def _frozen_credentials(self) -> Any:
        if self._credentials is None:
            if self._resolving is None:
                self._resolving = asyncio.Lock()
            async with self._resolving:
                if self._credentials is None:
                    # The chain may read files or call IMDS / the container endpoint: off the loop.
                    self._credentials = await asyncio.to_thread(self._resolve)
        credentials = self._credentials
        try:
            refresh_needed = getattr(credentials, "refresh_needed", None)
            if refresh_needed is not None and refresh_needed():
                return await asyncio.to_thread(credentials.get_frozen_credentials)
            return credentials.get_frozen_credentials()
        except Exception as exc:  # botocore's refresh failures: a clear 502, never a traceback
            raise _no_credentials(f"refreshing them failed ({type(exc).__name__}: {exc})") from None

    def _resolve(self) -> Any:
        import botocore.session

        try:
            credentials = botocore.session.get_session().get_credentials()
        except Exception as exc:
            raise _no_credentials(f"the credential chain failed ({type(exc).__name__}: {exc})") from None
        if credentials is None:
            raise _no_credentials("none found in the environment, config files or the instance/function role")
        return credentials

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """Bedrock's ``{"message"}`` with its error type (``x-amzn-ErrorType``) as the code."""
        error_type = headers.get("x-amzn-errortype", "").split(":", 1)[0] or None
        message = None
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict):
            message = parsed.get("message") or parsed.get("Message")
            error_type = error_type or parsed.get("__type")
        if status in (401, 403):  # the client gets a generic 502; the operator needs Bedrock's reason
            log.warning("Bedrock refused the gateway's credentials for %s: %s %s", self.model.name,
                        error_type, message)
        return refusal(self.model, status, headers, message=message, code=error_type)


def _no_credentials(why: str) -> GatewayError:
    return GatewayError(502, f"no AWS credentials for Bedrock: {why}.", type="api_error",
                        code="upstream_credentials")


def sign(request: httpx.Request, credentials: Any, region: str) -> httpx.Request:
    """``request`` with SigV4 headers (botocore's signer) over its exact URL, body and signed headers.

    Signed: ``host`` and ``content-type`` as httpx will send them, plus the
    ``x-amz-date`` and ``x-amz-security-token`` the signer adds. Other headers
    (``user-agent``, ``accept-encoding``, ``connection``) are left unsigned, so a
    transport that rewrites them cannot break the signature.
    """
    headers = {"host": request.headers["host"], "content-type": request.headers["content-type"]}
    aws = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
    SigV4Auth(credentials, SIGNING_NAME, region).add_auth(aws)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        value = aws.headers.get(name)
        if value is not None:
            request.headers[name.lower()] = value
    return request


# -- neutral → Converse ---------------------------------------------------------


def _messages(request: ChatRequest, cached: set[tuple[int, int]]) -> list[dict[str, Any]]:
    """Converse messages: adjacent messages of one role merged (Converse wants them alternating);
    a ``cachePoint`` after each part at a cache breakpoint."""
    out: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        content = []
        for number, part in enumerate(message.parts):
            block = _block(part)
            if block is not None:
                content.append(block)
                if (index, number) in cached:
                    content.append(CACHE_POINT)
        if not content:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(content)
        else:
            out.append({"role": message.role, "content": content})
    return out


def _block(part: Any) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text else None  # Converse refuses blank text blocks
    if isinstance(part, ToolCall):
        return {"toolUse": {"toolUseId": part.id, "name": part.name, "input": _arguments(part)}}
    if isinstance(part, ToolResult):
        result: dict[str, Any] = {"toolUseId": part.call_id, "content": [{"text": part.content}]}
        if part.is_error:
            result["status"] = "error"
        return {"toolResult": result}
    if isinstance(part, ImagePart):
        return {"image": _image(part)}
    raise unsupported(type(part).__name__, "by Bedrock")


def _arguments(call: ToolCall) -> dict[str, Any]:
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise bad_request(f"The arguments of tool call '{call.id}' are not a JSON object.",
                          param="tool_calls", code="invalid_tool_arguments")
    return value


def _image(part: ImagePart) -> dict[str, Any]:
    media_type, data = part.media_type, part.data
    if data is None and part.url and part.url.startswith("data:"):
        header, _, data = part.url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64":
            raise unsupported("image_url", "by Bedrock unless it is a base64 data URL")
    if data is None:
        raise unsupported("image_url", "by Bedrock (only inline base64 images; Bedrock cannot fetch URLs)")
    image_format = _IMAGE_FORMATS.get((media_type or "").lower())
    if image_format is None:
        raise unsupported("image media type", f"'{media_type}' by Bedrock (png, jpeg, gif, webp)")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("An image's data is not valid base64.", param="image", code="invalid_image") from None
    return {"format": image_format, "source": {"bytes": data}}  # Converse JSON carries blobs as base64


def _tool_config(request: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not request.tools:
        return None
    if request.tool_choice == "none":
        if any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"]):
            raise unsupported("tool_choice", "as 'none' by Bedrock once the conversation has tool calls "
                                             "(Converse has no 'none'; use 'auto')")
        return None  # without tools the model cannot call one
    config: dict[str, Any] = {"tools": [
        {"toolSpec": {"name": tool.name, **({"description": tool.description} if tool.description else {}),
                      "inputSchema": {"json": tool.parameters or {"type": "object", "properties": {}}}}}
        for tool in request.tools
    ]}
    if request.tool_choice_name:
        config["toolChoice"] = {"tool": {"name": request.tool_choice_name}}
    elif request.tool_choice == "required":
        config["toolChoice"] = {"any": {}}
    elif request.tool_choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


# -- Converse → neutral ---------------------------------------------------------


def finish_reason(stop: Any) -> FinishReason:
    """Bedrock's ``stopReason`` as a neutral one; reasons without a match (malformed output) are "stop"."""
    return _STOP_REASONS.get(stop, "stop") if isinstance(stop, str) else "stop"


def token_usage(usage: Any) -> TokenUsage | None:
    if not isinstance(usage, dict):
        return None
    cached = int(usage.get("cacheReadInputTokens") or 0)
    written = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cached + written
    completion = int(usage.get("outputTokens") or 0)
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                      cached_tokens=cached, cache_write_tokens=written)


class BedrockStreamDecoder:
    """ConverseStream's binary event stream in, neutral events out.

    Frames are parsed by botocore's `EventStreamBuffer` (prelude and message CRCs
    checked, sizes bounded at 24 MB a frame); bytes may be split anywhere.
    """

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.done = False
        self._buffer = EventStreamBuffer()
        self._tools: dict[int, int] = {}  # contentBlockIndex → neutral tool-call index
        self._stopped = False
        self._metadata = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        self._buffer.add_data(data)
        events: list[StreamEvent] = []
        try:
            for message in self._buffer:
                self._message(message.headers, message.payload, events)
        except ParserError as exc:
            raise failed_after(in_stream_error(self.model, f"The upstream for '{self.model.name}' sent a malformed "
                                                           f"event stream ({type(exc).__name__})."), events) from None
        except GatewayError as error:
            raise failed_after(error, events) from None
        return events

    def _message(self, headers: Mapping[str, Any], payload: bytes, events: list[StreamEvent]) -> None:
        kind = headers.get(":message-type")
        if kind == "exception":
            raise self._exception(str(headers.get(":exception-type") or "exception"), payload)
        if kind == "error":
            code = str(headers.get(":error-code") or "error")
            raise in_stream_error(self.model, f"Bedrock reported {code} mid-stream: "
                                              f"{headers.get(':error-message') or 'no message'}", code=code)
        if kind != "event":
            return
        try:
            body = json.loads(payload) if payload else {}
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise in_stream_error(self.model, f"The upstream for '{self.model.name}' sent an event that is "
                                              f"not JSON.") from None
        if not isinstance(body, dict):
            return
        event = headers.get(":event-type")
        if event == "contentBlockDelta":
            delta = body.get("delta") or {}
            if "text" in delta:
                if delta["text"]:
                    events.append(TextDelta(delta["text"]))
            elif "toolUse" in delta:
                index = self._tools.get(body.get("contentBlockIndex", -1))
                fragment = (delta["toolUse"] or {}).get("input")
                if index is not None and fragment:
                    events.append(ToolCallDelta(index, fragment))
            # reasoningContent and citation deltas are not text: not relayed.
        elif event == "contentBlockStart":
            use = (body.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = len(self._tools)
                self._tools[body.get("contentBlockIndex", index)] = index
                events.append(ToolCallStart(index, str(use.get("toolUseId", "")), str(use.get("name", ""))))
        elif event == "messageStop":
            self._stopped = True
            events.append(Finish(finish_reason(body.get("stopReason"))))
            self.done = self._metadata
        elif event == "metadata":
            usage = token_usage(body.get("usage"))
            if usage is not None:
                events.append(UsageReport(usage))
            self._metadata = True
            self.done = self._stopped
        # messageStart and contentBlockStop carry nothing the neutral events need.

    def _exception(self, exception_type: str, payload: bytes) -> GatewayError:
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError, UnicodeDecodeError):
            body = {}
        body = body if isinstance(body, dict) else {}
        message = str(body.get("message") or body.get("Message") or "no message")
        if body.get("originalMessage"):
            message += f" (model said, HTTP {body.get('originalStatusCode', '?')}: {body['originalMessage']})"
        if exception_type == "throttlingException":
            text = f"Bedrock throttled the stream (throttlingException): {message}"
            return in_stream_error(self.model, text, type="rate_limit_error", code=exception_type)
        return in_stream_error(self.model, f"Bedrock reported {exception_type} mid-stream: {message}",
                               code=exception_type)
