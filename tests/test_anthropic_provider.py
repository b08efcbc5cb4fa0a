"""The Anthropic provider: neutral requests as Messages calls, and answers, streams and errors back.

The wire samples below are spelled out from Anthropic's API reference (messages,
streaming, errors), not produced by the code under test; one round trip runs over
real HTTP against the loopback mock (`aisix.local.mocks.anthropic`).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from aisix.config import ModelConfig
from aisix.errors import GatewayError
from aisix.local.mocks.anthropic import AnthropicMock
from aisix.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider, SSEEvents
from aisix.translate.neutral import (
    ChatRequest,
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


def model_config(base_url: str = "https://api.anthropic.com", **extra: object) -> ModelConfig:
    return ModelConfig(name="claude", provider="anthropic", model="claude-sonnet-4-5", base_url=base_url,
                       timeout=30, api_key="sk-ant-secret", **extra)  # type: ignore[arg-type]


def build(request: ChatRequest, stream: bool = False, **extra: object) -> tuple[httpx.Request, dict]:
    provider = AnthropicProvider(model_config(**extra))  # type: ignore[arg-type]
    built = provider.chat_request(httpx.AsyncClient(), request, stream)
    return built, json.loads(built.content)


def hello(**fields: object) -> ChatRequest:
    return ChatRequest(messages=[Message("user", [TextPart("Hello")])], **fields)  # type: ignore[arg-type]


# -- requests -------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["https://api.anthropic.com", "https://api.anthropic.com/",
                                      "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/"])
def test_the_url_is_v1_messages_with_or_without_v1_in_base_url(base_url: str) -> None:
    request, _ = build(hello(), base_url=base_url)
    assert str(request.url) == "https://api.anthropic.com/v1/messages"


def test_headers_carry_the_key_and_version() -> None:
    request, _ = build(hello(), stream=True)
    assert request.method == "POST"
    assert request.headers["x-api-key"] == "sk-ant-secret"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers


def test_a_full_request_maps_every_part() -> None:
    chat = ChatRequest(
        system="Be brief.",
        messages=[
            Message("user", [TextPart("What is in this picture, and the weather?"),
                             ImagePart(media_type="image/jpeg", data="AAAA"),
                             ImagePart(url="https://example.com/cat.png"),
                             ImagePart(url="data:image/gif;base64,R0lG")]),
            Message("assistant", [TextPart(""), ToolCall("toolu_1", "get_weather", '{"city": "Paris"}')]),
            Message("user", [TextPart("and then?"), ToolResult("toolu_1", "18C", is_error=True)]),
        ],
        tools=[Tool("get_weather", "Weather now", {"type": "object", "properties": {"city": {"type": "string"}}}),
               Tool("noop", None, {})],
        tool_choice="auto", max_tokens=300, temperature=0.2, top_p=0.9, stop=["END"],
    )
    _, body = build(chat, stream=True)
    assert body == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
            ]},
            # The empty text is left out (Anthropic refuses empty text blocks).
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            # Tool results first in a user turn, as Anthropic wants.
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C", "is_error": True},
                {"type": "text", "text": "and then?"}]},
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather now",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "noop", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "auto"},
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
    }


@pytest.mark.parametrize(("choice", "name", "expected"), [
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ("required", "get_weather", {"type": "tool", "name": "get_weather"}),
    (None, None, None),
])
def test_tool_choice(choice: str | None, name: str | None, expected: dict | None) -> None:
    _, body = build(hello(tool_choice=choice, tool_choice_name=name))
    assert body.get("tool_choice") == expected
    assert "stream" not in body


def test_max_tokens_default_then_the_model_default_then_the_request() -> None:
    request = hello()
    assert build(request)[1]["max_tokens"] == DEFAULT_MAX_TOKENS == 32000  # Claude Code's own default
    assert "max_tokens 32000 (the default for Claude models)" in request.notes
    assert build(hello(), max_tokens=64000)[1]["max_tokens"] == 64000
    assert build(hello(max_tokens=10), max_tokens=64000)[1]["max_tokens"] == 10


@pytest.mark.parametrize(("model", "expected"), [
    ("claude-3-5-haiku-20241022", 8192), ("claude-3-haiku-20240307", 4096), ("claude-3-7-sonnet-latest", 32000),
    ("claude-opus-4-1", 32000), ("claude-sonnet-4-5-20250929", 32000), ("claude-future-9", 32000),
])
def test_the_default_never_exceeds_an_older_models_output_limit(model: str, expected: int) -> None:
    provider = AnthropicProvider(ModelConfig(name="c", provider="anthropic", model=model,
                                             base_url="https://api.anthropic.com", timeout=30))
    assert provider.messages_body(hello())["max_tokens"] == expected


TOOL_LOOP = [Message("user", [TextPart("Run it")]), Message("assistant", [ToolCall("toolu_1", "Bash", "{}")]),
             Message("user", [ToolResult("toolu_1", "done", name="Bash")])]


def test_thinking_is_left_out_when_the_turn_continues_a_translated_tool_call() -> None:
    """Anthropic refuses thinking when the last assistant turn's tool call comes without its thinking block,
    which a history from another protocol never has: that turn goes without thinking."""
    request = ChatRequest(messages=TOOL_LOOP, reasoning_effort="high")
    _, body = build(request)
    assert "thinking" not in body
    assert any("thinking not sent" in note for note in request.notes)
    _, body = build(ChatRequest(messages=TOOL_LOOP[:1], reasoning_effort="high"))
    assert body["thinking"]["type"] == "enabled"


def test_thinking_is_left_out_with_a_forced_tool_choice() -> None:
    _, body = build(hello(reasoning_effort="high", tool_choice="required",
                          tools=[Tool("f", None, {"type": "object"})]))
    assert "thinking" not in body and body["tool_choice"] == {"type": "any"}


def test_cache_marks_become_cache_control_and_a_cache_key_marks_system_and_the_last_turn() -> None:
    marked = ChatRequest(messages=[Message("user", [TextPart("a", cache=True), TextPart("b")])], system="S",
                         cache_system=True, cache_tools=True, tools=[Tool("f", None, {"type": "object"})])
    _, body = build(marked)
    assert body["system"] == [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][0]["content"] == [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                                              {"type": "text", "text": "b"}]
    _, body = build(ChatRequest(messages=TOOL_LOOP, system="S", cache_key="session-1"))
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(build(hello(system="S"))[1])


def test_at_most_four_cache_breakpoints_the_latest_kept() -> None:
    parts = [TextPart(str(n), cache=True) for n in range(6)]
    _, body = build(ChatRequest(messages=[Message("user", parts)], system="S", cache_system=True))
    marked = [block["text"] for block in body["messages"][0]["content"] if "cache_control" in block]
    assert marked == ["3", "4", "5"] and "cache_control" in body["system"][0]


def test_reasoning_budget_becomes_thinking_and_max_tokens_makes_room() -> None:
    _, body = build(hello(reasoning_budget=8000, max_tokens=1000))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert body["max_tokens"] > 8000
    _, body = build(hello(reasoning_budget=100, max_tokens=5000))
    assert body["thinking"]["budget_tokens"] == 1024  # Anthropic's minimum
    assert body["max_tokens"] == 5000


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_becomes_a_budget(effort: str, budget: int) -> None:
    _, body = build(hello(reasoning_effort=effort))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] > budget


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_tool_call_arguments_that_are_not_a_json_object_are_a_400_naming_the_field(arguments: str) -> None:
    chat = ChatRequest(messages=[Message("user", [TextPart("hi")]),
                                 Message("assistant", [ToolCall("call_1", "f", arguments)])])
    with pytest.raises(GatewayError) as caught:
        build(chat)
    assert caught.value.status == 400
    assert caught.value.param == "messages[1].tool_calls.arguments"
    assert "call_1" in caught.value.message


def test_empty_arguments_are_an_empty_input() -> None:
    chat = ChatRequest(messages=[Message("assistant", [ToolCall("call_1", "f", "")])])
    assert build(chat)[1]["messages"][0]["content"][0]["input"] == {}


def test_count_tokens_request_leaves_out_sampling_fields() -> None:
    provider = AnthropicProvider(model_config())
    request = provider.count_tokens_request(httpx.AsyncClient(), hello(max_tokens=10, temperature=1.0, stop=["x"]))
    assert str(request.url) == "https://api.anthropic.com/v1/messages/count_tokens"
    assert json.loads(request.content) == {"model": "claude-sonnet-4-5",
                                           "messages": [{"role": "user", "content": [{"type": "text",
                                                                                      "text": "Hello"}]}]}
    assert provider.count_tokens_response(b'{"input_tokens": 14}') == 14


def test_passthrough_request_forwards_betas_and_query() -> None:
    provider = AnthropicProvider(model_config())
    body = {"model": "claude", "max_tokens": 5, "stream": True, "messages": [], "context_management": {"x": 1}}
    request = provider.passthrough_request(httpx.AsyncClient(), body, {"anthropic-beta": "claude-code-20250219",
                                                                        "x-api-key": "client-key"}, query="beta=true")
    assert str(request.url) == "https://api.anthropic.com/v1/messages?beta=true"
    assert request.headers["anthropic-beta"] == "claude-code-20250219"
    assert request.headers["x-api-key"] == "sk-ant-secret"
    assert json.loads(request.content) == {**body, "model": "claude-sonnet-4-5"}


# -- complete answers ------------------------------------------------------------------

MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Let me check the weather.", "signature": "EqQBCgIYAh"},
        {"type": "text", "text": "I'll check."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"city": "Paris", "unit": "celsius"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000,
              "output_tokens": 50},
}


def test_a_complete_answer_keeps_text_and_tool_calls_in_order_without_thinking() -> None:
    answer = AnthropicProvider(model_config()).chat_response(json.dumps(MESSAGE).encode())
    assert [type(p) for p in answer.parts] == [TextPart, ToolCall]
    assert answer.text == "I'll check."
    call = answer.tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "Paris", "unit": "celsius"})
    assert answer.finish == "tool_calls"
    assert answer.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert answer.usage == TokenUsage(1210, 50, 1260, cached_tokens=1000, cache_write_tokens=200)


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    body = {**MESSAGE, "stop_reason": stop_reason}
    assert AnthropicProvider(model_config()).chat_response(json.dumps(body).encode()).finish == finish


# -- streams ----------------------------------------------------------------------------

# A stream as the streaming reference shows one: thinking, text, then a tool call.
STREAM = b"".join(
    f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant", "model": "claude-x",
            "stop_sequence": None, "stop_reason": None, "content": [],
            "usage": {"input_tokens": 472, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0,
                      "output_tokens": 2}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Hmm, weather."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Okay, let's check é"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": " the weather"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": " \"Paris\"}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 89}}),
        ("message_stop", {"type": "message_stop"}),
    ]
)

EXPECTED = [
    TextDelta("Okay, let's check é"),
    TextDelta(" the weather"),
    ToolCallStart(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
    ToolCallDelta(0, '{"location":'),
    ToolCallDelta(0, ' "Paris"}'),
    Finish("tool_calls"),
    UsageReport(TokenUsage(572, 89, 661, cached_tokens=100)),
]


def decode_all(chunks: list[bytes]) -> tuple[list, bool]:
    decoder = AnthropicProvider(model_config()).stream_decoder()
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events, decoder.done


def test_a_stream_decodes_into_neutral_events() -> None:
    events, done = decode_all([STREAM])
    assert events == EXPECTED
    assert done


def test_a_stream_split_at_every_byte_boundary_decodes_the_same() -> None:
    for cut in range(1, len(STREAM)):
        assert decode_all([STREAM[:cut], STREAM[cut:]]) == (EXPECTED, True), cut


def test_a_stream_fed_one_byte_at_a_time_with_crlf_line_ends() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert decode_all([crlf[i:i + 1] for i in range(len(crlf))]) == (EXPECTED, True)


def test_a_stream_cut_before_message_stop_is_not_done() -> None:
    cut = STREAM[:STREAM.index(b"event: message_stop")]
    events, done = decode_all([cut])
    assert events == EXPECTED and not done


def test_an_error_event_mid_stream_raises_with_its_type() -> None:
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    decoder = AnthropicProvider(model_config()).stream_decoder()
    decoder.feed(STREAM[:STREAM.index(b"event: content_block_stop")])
    with pytest.raises(GatewayError) as caught:
        decoder.feed(error)
    assert caught.value.type == "overloaded_error"
    assert caught.value.message == "Overloaded"
    assert caught.value.status == 502


def test_sse_events_keep_each_event_byte_exact() -> None:
    splitter = SSEEvents()
    raw = b'event: ping\ndata: {"type": "ping"}\n\n: comment\n\nevent: message_stop\r\ndata: {}\r\n\r\n'
    events = [event for byte in range(len(raw)) for event in splitter.feed(raw[byte:byte + 1])]
    assert events == [(b'event: ping\ndata: {"type": "ping"}\n\n', "ping", '{"type": "ping"}'),
                      (b"event: message_stop\r\ndata: {}\r\n\r\n", "message_stop", "{}")]


def test_sse_events_whole_reads_with_extra_blank_lines() -> None:
    splitter = SSEEvents()
    splitter.feed(b"event: ping\ndata: {}\n\n")
    events = splitter.feed(b"\n\nevent: a\ndata: 1\n\n\nevent: b\ndata: 2\ndata: 3\n\nevent: c\nda")
    assert events == [(b"event: a\ndata: 1\n\n", "a", "1"), (b"event: b\ndata: 2\ndata: 3\n\n", "b", "2\n3")]
    assert splitter.feed(b"ta: 4\n\n") == [(b"event: c\ndata: 4\n\n", "c", "4")]


# -- errors --------------------------------------------------------------------------------


def anthropic_error(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message},
                       "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).encode()


def test_a_400_keeps_anthropics_wording() -> None:
    message = "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"user\" roles"
    error = AnthropicProvider(model_config()).error(400, {}, anthropic_error("invalid_request_error", message))
    assert (error.status, error.type, error.message) == (400, "invalid_request_error", message)


def test_a_429_keeps_retry_after() -> None:
    error = AnthropicProvider(model_config()).error(
        429, {"retry-after": "7"}, anthropic_error("rate_limit_error", "Number of request tokens has exceeded"))
    assert (error.status, error.type, error.headers) == (429, "rate_limit_error", {"retry-after": "7"})


def test_529_overloaded_is_a_server_error_that_stays_overloaded() -> None:
    error = AnthropicProvider(model_config()).error(529, {"retry-after": "3"}, anthropic_error("overloaded_error",
                                                                                               "Overloaded"))
    assert error.status in (502, 503)
    assert error.type == "overloaded_error"
    assert error.headers.get("retry-after") == "3"


def test_a_401_is_the_gateways_problem_and_never_echoes_the_key() -> None:
    error = AnthropicProvider(model_config()).error(
        401, {}, anthropic_error("authentication_error", "invalid x-api-key sk-ant-secret"))
    assert error.status == 502
    assert "sk-ant-secret" not in error.message


# -- over real HTTP: provider -> mock -> provider ----------------------------------------


@pytest.fixture(scope="module")
def mock_server():
    mock = AnthropicMock(words=5)
    server = ServerThread(mock).start()
    yield server.url, mock
    server.stop()


def test_round_trip_over_loopback(mock_server: tuple[str, AnthropicMock]) -> None:
    url, mock = mock_server
    provider = AnthropicProvider(model_config(base_url=url))

    async def run() -> tuple:
        async with httpx.AsyncClient() as client:
            plain = await client.send(provider.chat_request(client, hello(system="Be brief."), stream=False))
            answer = provider.chat_response(plain.content)

            request = ChatRequest(messages=[Message("user", [TextPart("Weather? #mock tool=get_weather words=2")])],
                                  tools=[Tool("get_weather", None, {"type": "object"})])
            response = await client.send(provider.chat_request(client, request, stream=True), stream=True)
            decoder, events = provider.stream_decoder(), []
            async for chunk in response.aiter_raw():
                events.extend(decoder.feed(chunk))
            stream_done = decoder.done

            failing = hello()
            failing.messages[0].parts[0] = TextPart("#mock fail_after=4")
            response = await client.send(provider.chat_request(client, failing, stream=True), stream=True)
            decoder, error = provider.stream_decoder(), None
            try:
                async for chunk in response.aiter_raw():
                    decoder.feed(chunk)
            except GatewayError as exc:
                error = exc

            limited = hello()
            limited.messages[0].parts[0] = TextPart("#mock status=429")
            refused = await client.send(provider.chat_request(client, limited, stream=False))
            refusal = provider.error(refused.status_code, refused.headers, refused.content)

            count = await client.send(provider.count_tokens_request(client, hello()))
            return answer, events, stream_done, error, refusal, provider.count_tokens_response(count.content)

    answer, events, done, error, refusal, tokens = asyncio.run(run())
    assert answer.text == "Once upon a time, a"
    assert answer.finish == "stop" and answer.usage is not None and answer.usage.completion_tokens > 0
    sent = mock.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-secret"
    assert sent["json"]["system"] == "Be brief." and sent["json"]["max_tokens"] == DEFAULT_MAX_TOKENS

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Once upon"
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "toolu_mock0001", "get_weather")]
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert json.loads(arguments) == {"city": "Paris"}
    assert Finish("tool_calls") in events and isinstance(events[-1], UsageReport)
    assert done

    assert error is not None and error.type == "overloaded_error"
    assert (refusal.status, refusal.type, refusal.headers) == (429, "rate_limit_error", {"retry-after": "7"})
    assert tokens > 0
