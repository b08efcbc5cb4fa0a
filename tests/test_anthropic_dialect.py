"""The Anthropic Messages dialect: what Anthropic clients send, and what they get back.

Everything the dialect writes is checked with the ``anthropic`` SDK's own types
(``Message``, ``RawMessageStreamEvent``, ``ErrorResponse``), and, over real HTTP,
by the SDK itself (``messages.create`` / ``messages.stream``) against a small
harness app that wires the dialect to the Anthropic provider and the loopback mock,
on the translated path and the pass-through one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import ErrorResponse, Message as SDKMessage, RawMessageStreamEvent
from pydantic import TypeAdapter
from starlette.datastructures import Headers

from aisix.call import Call
from aisix.config import ModelConfig
from aisix.dialects.anthropic_messages import (
    DROPPED_FIELDS,
    AnthropicMessagesDialect,
    AnthropicPassthrough,
    passthrough_usage,
)
from aisix.errors import GatewayError
from aisix.local.mocks.anthropic import AnthropicMock
from aisix.providers.anthropic import AnthropicProvider
from aisix.translate.neutral import (
    ChatRequest,
    ChatResponse,
    Finish,
    ImagePart,
    Message,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from aisix.usage import TokenUsage
from conftest import ServerThread

DIALECT = AnthropicMessagesDialect()
STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


def call_for(body: dict[str, Any], alias: str = "claude") -> Call:
    return Call(key=None, model_name=alias, body=body, stream=bool(body.get("stream")), dialect="anthropic_messages")


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}], **fields}


# -- credentials ---------------------------------------------------------------------------


def test_credentials_from_x_api_key_or_bearer() -> None:
    assert DIALECT.credentials(Headers({"x-api-key": "k1"})) == "k1"
    assert DIALECT.credentials(Headers({"authorization": "Bearer k2"})) == "k2"  # ANTHROPIC_AUTH_TOKEN


def test_missing_credentials_are_a_401_in_anthropics_shape() -> None:
    with pytest.raises(GatewayError) as caught:
        DIALECT.credentials(Headers({"authorization": "Basic abc"}))
    error = caught.value
    assert error.status == 401
    written = DIALECT.error_body(error)
    assert written == {"type": "error", "error": {"type": "authentication_error",
                                                  "message": "x-api-key header is required"}}
    ErrorResponse.model_validate(written)


# -- validation -------------------------------------------------------------------------------


def test_a_valid_request_gives_the_alias_and_stream() -> None:
    assert DIALECT.validate(body()) == ("claude", False)
    assert DIALECT.validate(body(stream=True)) == ("claude", True)
    # A system message inside messages passes (Anthropic's wording refuses it on pass-through).
    assert DIALECT.validate(body(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]))


@pytest.mark.parametrize(("change", "field"), [
    ({"model": None}, "model"),
    ({"model": 3}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0"),
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
])
def test_invalid_requests_are_400s_naming_the_field(change: dict[str, Any], field: str) -> None:
    request = {**body(), **change}
    request = {k: v for k, v in request.items() if v is not None}
    with pytest.raises(GatewayError) as caught:
        DIALECT.validate(request)
    error = caught.value
    assert error.status == 400 and error.param == field
    assert error.message.startswith(field + ": ")
    written = DIALECT.error_body(error)
    assert written["error"]["type"] == "invalid_request_error"
    ErrorResponse.model_validate(written)


# -- translation to the neutral request ---------------------------------------------------------

CLAUDE_CODE_LIKE = {
    "model": "claude",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be careful."},
    ],
    "messages": [
        {"role": "system", "content": "Extra rules."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQB"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"}],
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Try again"},
        ]},
    ],
    "tools": [
        {"name": "get_weather", "description": "Weather now", "input_schema": {"type": "object"},
         "cache_control": {"type": "ephemeral"}},
        {"name": "later", "input_schema": {"type": "object"}, "defer_loading": True},
    ],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "medium"},
    "metadata": {"user_id": "{\"device_id\": \"abc\"}"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "temperature": 1,
    "stop_sequences": ["\n\nHuman:"],
}


def test_a_claude_code_like_request_translates() -> None:
    chat = DIALECT.to_chat(CLAUDE_CODE_LIKE)
    assert chat == ChatRequest(
        system="You are Claude Code.\n\nBe careful.\n\nExtra rules.",
        messages=[
            Message("user", [TextPart("Weather in Paris?", cache=True), ImagePart(media_type="image/png", data="iVBOR"),
                             ImagePart(url="https://example.com/a.png")]),
            Message("assistant", [TextPart("Checking."), ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')]),
            Message("user", [ToolResult("toolu_1", "timeout\n\nretry later", is_error=True, name="get_weather",
                                        cache=True),
                             TextPart("Try again")]),
        ],
        tools=[Tool("get_weather", "Weather now", {"type": "object"}), Tool("later", None, {"type": "object"})],
        tool_choice="auto",
        max_tokens=32000,
        temperature=1.0,
        stop=["\n\nHuman:"],
        stream=True,
        reasoning_effort="medium",
        cache_system=True,
        cache_tools=True,
        notes=["dropped context_management, metadata", "1 role=system message(s) moved into the system prompt",
               "dropped 2 thinking block(s) of earlier turns", "thinking adaptive effort medium"],
    )


@pytest.mark.parametrize(("thinking", "output_config", "effort", "budget"), [
    ({"type": "enabled", "budget_tokens": 2048}, None, None, 2048),
    ({"type": "adaptive"}, None, "high", None),
    ({"type": "adaptive"}, {"effort": "max"}, "high", None),
    ({"type": "disabled"}, None, None, None),
    (None, {"effort": "low"}, "low", None),
])
def test_thinking_and_effort(thinking: Any, output_config: Any, effort: str | None, budget: int | None) -> None:
    fields = {k: v for k, v in {"thinking": thinking, "output_config": output_config}.items() if v is not None}
    chat = DIALECT.to_chat(body(**fields))
    assert (chat.reasoning_effort, chat.reasoning_budget) == (effort, budget)


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "any"}, ("required", None)),
    ({"type": "none"}, ("none", None)),
    ({"type": "tool", "name": "f"}, ("required", "f")),
])
def test_tool_choice(choice: dict[str, Any], expected: tuple) -> None:
    chat = DIALECT.to_chat(body(tool_choice=choice))
    assert (chat.tool_choice, chat.tool_choice_name) == expected


def test_harmless_fields_are_dropped() -> None:
    assert {"metadata", "service_tier", "context_management", "betas"} <= DROPPED_FIELDS
    chat = DIALECT.to_chat(body(metadata={"user_id": "u"}, service_tier="auto", context_management={},
                                betas=["x"]))
    assert chat.messages == [Message("user", [TextPart("Hello")])]


def test_fields_only_anthropic_could_honour_are_dropped_and_named_not_refused() -> None:
    """A newer Claude Code may send a top-level field the gateway does not know: a translated call
    drops it (and names it in its log line) rather than failing every call with a 400."""
    chat = DIALECT.to_chat(body(container="container_1", top_k=5, inference_geo="us",
                                mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]))
    assert chat.messages == [Message("user", [TextPart("Hello")])]
    assert chat.notes == ["dropped container, inference_geo, mcp_servers, top_k"]


@pytest.mark.parametrize(("change", "field"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"tools": [{"name": "f", "description": "no schema"}]}, "tools.0.input_schema"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config.format"),
    ({"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}, "tool_choice.disable_parallel_tool_use"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}]}]}]},
     "messages.0.content.0.content.0.type=image"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages.0.content.0.type=document"),
])
def test_what_cannot_be_carried_is_a_clear_400(change: dict[str, Any], field: str) -> None:
    with pytest.raises(GatewayError) as caught:
        DIALECT.to_chat(body(**change))
    error = caught.value
    assert error.status == 400
    assert error.param == field
    assert field.split("=")[0].split(".")[0] in error.message
    assert DIALECT.error_body(error)["error"]["type"] == "invalid_request_error"


# -- complete answers -----------------------------------------------------------------------------


def test_a_complete_answer_is_an_sdk_valid_message() -> None:
    answer = ChatResponse(
        parts=[TextPart("Let me check."), ToolCall("call_abc", "get_weather", '{"city": "Paris"}')],
        finish="tool_calls",
        usage=TokenUsage(1210, 50, 1260, cached_tokens=1000, cache_write_tokens=200),
        id="chatcmpl-123",
    )
    written = DIALECT.chat_answer(answer, call_for(body()))
    message = SDKMessage.model_validate(written)
    assert written["id"].startswith("msg_") and written["model"] == "claude"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use" and written["stop_sequence"] is None
    assert written["usage"] == {"input_tokens": 10, "output_tokens": 50, "cache_creation_input_tokens": 200,
                                "cache_read_input_tokens": 1000}


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
])
def test_finish_reasons(finish: str, stop_reason: str) -> None:
    written = DIALECT.chat_answer(ChatResponse([TextPart("x")], finish, None), call_for(body()))  # type: ignore[arg-type]
    assert SDKMessage.model_validate(written).stop_reason == stop_reason
    assert written["usage"]["input_tokens"] > 0 and written["usage"]["output_tokens"] > 0  # estimated


# -- streams ------------------------------------------------------------------------------------


def frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) of each SSE frame, checked to be Anthropic's framing."""
    out = []
    assert raw.endswith(b"\n\n")
    for block in raw.decode().split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name, data = event_line[7:], json.loads(data_line[6:])
        assert data["type"] == name
        out.append((name, data))
    return out


def encode(events: list[Any], request: dict[str, Any] | None = None) -> tuple[bytes, list[bytes]]:
    encoder = DIALECT.stream_encoder(call_for(request or body(stream=True)))
    pieces = [encoder.start(), *(encoder.encode(event) for event in events), encoder.end()]
    return b"".join(pieces), pieces


def sdk_final_message(raw: bytes) -> Any:
    """The message the SDK's stream helper builds from these frames; every event validated on the way."""
    snapshot, buffers = None, {}
    for name, data in frames(raw):
        if name == "ping":
            continue
        event = STREAM_EVENT.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)
    return snapshot


TOOL_STREAM = [
    TextDelta("Let me "), TextDelta("check."),
    ToolCallStart(0, "call_1", "get_weather"), ToolCallDelta(0, '{"city"'), ToolCallDelta(0, ': "Paris"}'),
    ToolCallStart(1, "call_2", "get_time"), ToolCallDelta(1, "{}"),
    Finish("tool_calls"),
    UsageReport(TokenUsage(300, 42, 342, cached_tokens=100)),  # after the finish, as OpenAI sends it
]


def test_a_stream_is_what_the_sdk_accumulates_into_the_message() -> None:
    raw, _ = encode(TOOL_STREAM)
    names = [name for name, _ in frames(raw)]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    message = sdk_final_message(raw)
    assert message.model == "claude"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Let me check."
    assert (message.content[1].id, message.content[1].name, message.content[1].input) == (
        "call_1", "get_weather", {"city": "Paris"})
    assert message.content[2].input == {}
    assert message.stop_reason == "tool_use"
    # Real usage, reported after the finish, still made the message_delta.
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens) == (
        200, 42, 100)


def test_message_start_reports_non_zero_input_tokens() -> None:
    long_prompt = body(stream=True, messages=[{"role": "user", "content": "word " * 400}])
    raw, pieces = encode([TextDelta("Hi"), Finish("stop")], long_prompt)
    start = frames(pieces[0])[0][1]["message"]["usage"]
    assert start["input_tokens"] >= 400 and start["output_tokens"] == 1
    # No usage from the upstream: the message_delta carries the estimate, never zeros.
    delta = frames(raw)[-2][1]
    assert delta["usage"]["input_tokens"] == start["input_tokens"] and delta["usage"]["output_tokens"] >= 1


def test_the_message_delta_waits_for_the_end() -> None:
    _, pieces = encode([TextDelta("Hi"), Finish("length")])
    finish_piece = pieces[2]
    assert [name for name, _ in frames(finish_piece)] == ["content_block_stop"]
    assert [name for name, _ in frames(pieces[-1])] == ["message_delta", "message_stop"]
    assert frames(pieces[-1])[0][1]["delta"]["stop_reason"] == "max_tokens"


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    raw, _ = encode([ToolCallStart(0, "c", "f"), ToolCallDelta(0, "{}"), TextDelta("done"), Finish("stop")])
    message = sdk_final_message(raw)
    assert [b.type for b in message.content] == ["tool_use", "text"]
    indexes = [data["index"] for name, data in frames(raw) if name == "content_block_start"]
    assert indexes == [0, 1]


def test_interleaved_tool_arguments_are_an_upstream_error() -> None:
    encoder = DIALECT.stream_encoder(call_for(body(stream=True)))
    encoder.start()
    encoder.encode(ToolCallStart(0, "a", "f"))
    encoder.encode(ToolCallStart(1, "b", "g"))
    with pytest.raises(GatewayError) as caught:
        encoder.encode(ToolCallDelta(0, "{}"))  # block 0 is closed: Anthropic's blocks never interleave
    assert caught.value.status == 502


@pytest.mark.parametrize(("status", "error_type"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
    (502, "api_error"), (503, "overloaded_error"), (504, "api_error"), (422, "invalid_request_error"),
])
def test_errors_by_status(status: int, error_type: str) -> None:
    error = GatewayError(status, "Something.", type="server_error" if status >= 500 else "invalid_request_error")
    assert DIALECT.error_body(error) == {"type": "error", "error": {"type": error_type, "message": "Something."}}
    frame = DIALECT.error_frame(error)
    assert frame == b"event: error\ndata: " + json.dumps(
        DIALECT.error_body(error), separators=(",", ":")).encode() + b"\n\n"
    if error_type != "request_too_large":  # documented by Anthropic, not (yet) in the SDK's union
        ErrorResponse.model_validate(DIALECT.error_body(error))


def test_an_upstream_overloaded_error_mid_stream_stays_overloaded() -> None:
    error = GatewayError(502, "Overloaded", type="overloaded_error")
    assert DIALECT.error_body(error)["error"]["type"] == "overloaded_error"


# -- pass-through ------------------------------------------------------------------------------

UPSTREAM_EVENTS = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0,
                  "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Héllo"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 1}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 15}}),
    ("message_stop", {"type": "message_stop"}),
]
UPSTREAM = [f"event: {n}\ndata: {json.dumps(d, ensure_ascii=False)}\n\n".encode() for n, d in UPSTREAM_EVENTS]


def upstream_model() -> ModelConfig:
    return ModelConfig(name="claude", provider="anthropic", model="claude-sonnet-4-5",
                       base_url="https://api.anthropic.com", timeout=30, api_key="sk-ant-secret")


def test_passthrough_relays_each_event_byte_exact_wherever_the_bytes_split() -> None:
    raw = b"".join(UPSTREAM)
    for cut in range(1, len(raw)):
        relay = AnthropicPassthrough(upstream_model())
        out = relay.feed(raw[:cut]) + relay.feed(raw[cut:])
        assert out == UPSTREAM, cut
        assert relay.done and relay.usage_final
        assert relay.usage == TokenUsage(30, 15, 45, cached_tokens=5)
        assert relay.output_chars == len("Héllo") + len('{"a": 1}')


def test_passthrough_usage_before_the_final_delta() -> None:
    relay = AnthropicPassthrough(upstream_model())
    relay.feed(b"".join(UPSTREAM[:4]))
    assert relay.usage is not None and relay.usage.prompt_tokens == 30 and not relay.usage_final
    assert not relay.done


def test_passthrough_raises_on_an_upstream_error_event() -> None:
    relay = AnthropicPassthrough(upstream_model())
    relay.feed(b"".join(UPSTREAM[:4]))
    with pytest.raises(GatewayError) as caught:
        relay.feed(b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
                   b'"message": "Overloaded"}}\n\n')
    assert caught.value.type == "overloaded_error" and caught.value.message == "Overloaded"
    assert DIALECT.error_frame(caught.value).startswith(b"event: error\ndata: ")


def test_passthrough_usage_of_a_complete_answer() -> None:
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
              "stop_reason": "end_turn", "stop_sequence": None,
              "usage": {"input_tokens": 3, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 0,
                        "output_tokens": 4}}
    assert passthrough_usage(json.dumps(answer).encode()) == TokenUsage(10, 4, 14, cache_write_tokens=7)
    assert passthrough_usage(b"not json") is None


# -- over real HTTP, with the official SDK ----------------------------------------------------


class Harness:
    """The dialect, the Anthropic provider and the mock, wired the simplest way (not the gateway's lifecycle)."""

    def __init__(self, upstream_url: str, passthrough: bool) -> None:
        self.provider = AnthropicProvider(ModelConfig(
            name="claude", provider="anthropic", model="claude-sonnet-4-5", base_url=upstream_url, timeout=30,
            api_key="sk-ant-secret"))
        self.passthrough = passthrough
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            from aisix.local.mock_upstream import serve_lifespan

            await serve_lifespan(receive, send)
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = Headers(scope=scope)
        started = False
        try:
            DIALECT.credentials(headers)
            request = json.loads(raw)
            alias, stream = DIALECT.validate(request)
            call = call_for(request, alias)
            async with httpx.AsyncClient() as client:
                if self.passthrough:
                    upstream = self.provider.passthrough_request(client, request, headers)
                else:
                    upstream = self.provider.chat_request(client, DIALECT.to_chat(request), stream)
                response = await client.send(upstream, stream=True)
                if response.status_code != 200:
                    refused = await response.aread()
                    raise self.provider.error(response.status_code, response.headers, refused)
                if not stream:
                    answer = await response.aread()
                    if not self.passthrough:
                        answer = json.dumps(DIALECT.chat_answer(self.provider.chat_response(answer), call)).encode()
                    await _send(send, 200, answer, "application/json")
                    return
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]})
                started = True
                if self.passthrough:
                    relay = AnthropicPassthrough(self.provider.model)
                    async for chunk in response.aiter_raw():
                        for event in relay.feed(chunk):
                            await send({"type": "http.response.body", "body": event, "more_body": True})
                else:
                    decoder, encoder = self.provider.stream_decoder(), DIALECT.stream_encoder(call)
                    await send({"type": "http.response.body", "body": encoder.start(), "more_body": True})
                    async for chunk in response.aiter_raw():
                        for event in decoder.feed(chunk):
                            frame = encoder.encode(event)
                            if frame:
                                await send({"type": "http.response.body", "body": frame, "more_body": True})
                    await send({"type": "http.response.body", "body": encoder.end(), "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except GatewayError as error:
            if started:
                await send({"type": "http.response.body", "body": DIALECT.error_frame(error)})
            else:
                await _send(send, error.status, json.dumps(DIALECT.error_body(error)).encode(), "application/json",
                            error.headers)


async def _send(send: Any, status: int, payload: bytes, media_type: str, headers: dict[str, str] | None = None) -> None:
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media_type.encode()), *extra]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def servers():
    mock = AnthropicMock(words=6)
    upstream = ServerThread(mock).start()
    translated = ServerThread(Harness(upstream.url, passthrough=False)).start()
    passthrough = ServerThread(Harness(upstream.url, passthrough=True)).start()
    yield mock, translated.url, passthrough.url
    for server in (translated, passthrough, upstream):
        server.stop()


WEATHER_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.mark.parametrize("path", ["translated", "passthrough"])
def test_the_official_sdk_round_trip(servers: tuple, path: str) -> None:
    mock, translated_url, passthrough_url = servers
    url = translated_url if path == "translated" else passthrough_url

    async def run() -> tuple:
        client = anthropic.AsyncAnthropic(base_url=url, auth_token="gateway-key", api_key=None, max_retries=0)
        plain = await client.messages.create(model="claude", max_tokens=100,
                                             messages=[{"role": "user", "content": "Hello"}])
        async with client.messages.stream(
            model="claude", max_tokens=100, tools=[WEATHER_TOOL],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Weather? #mock tool=get_weather thinking=1"}],
        ) as stream:
            starts = []
            async for event in stream:
                if event.type == "message_start":
                    starts.append(event.message.usage.input_tokens)
            final = await stream.get_final_message()
        failure: Any = None
        try:
            async with client.messages.stream(model="claude", max_tokens=100,
                                              messages=[{"role": "user", "content": "#mock fail_after=5"}]) as s:
                async for _ in s:
                    pass
        except anthropic.APIStatusError as exc:
            failure = exc
        limited: Any = None
        try:
            await client.messages.create(model="claude", max_tokens=100,
                                         messages=[{"role": "user", "content": "#mock status=429"}])
        except anthropic.RateLimitError as exc:
            limited = exc
        return plain, starts, final, failure, limited

    plain, starts, final, failure, limited = asyncio.run(run())
    assert plain.content[0].type == "text" and plain.content[0].text == "Once upon a time, a brave"
    assert plain.model == ("claude" if path == "translated" else "claude-sonnet-4-5")
    assert plain.usage.input_tokens > 0
    assert starts and starts[0] > 0
    assert [block.type for block in final.content][-2:] == ["text", "tool_use"]
    assert final.content[-1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 1
    assert failure is not None and failure.body["error"]["type"] == "overloaded_error"
    assert limited is not None and limited.response.headers["retry-after"] == "7"
    assert limited.body["error"]["type"] == "rate_limit_error"
    # What reached the upstream: the gateway's key, never the client's.
    assert all(r["headers"]["x-api-key"] == "sk-ant-secret" for r in mock.requests)
