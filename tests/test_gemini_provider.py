"""Gemini (AI Studio): neutral <-> generateContent both ways, the SSE stream, embeddings, counting, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from aisix.config import ModelConfig
from aisix.errors import GatewayError
from aisix.local.mocks.gemini import SIGNATURE, GeminiMock
from aisix.providers import provider_class
from aisix.providers.gemini import GeminiProvider, gemini_schema, signature_of
from aisix.translate.neutral import (
    ChatRequest,
    EmbeddingsRequest,
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
from tests.conftest import ServerThread

WEATHER = Tool("get_weather", "The weather in a city.", {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
    "properties": {"city": {"type": "string", "description": "City name"},
                   "unit": {"type": ["string", "null"], "enum": ["C", "F"]}},
    "required": ["city"],
})


def gemini(base_url: str = "https://generativelanguage.googleapis.com", model: str = "gemini-2.5-flash",
           **extra: Any) -> GeminiProvider:
    return GeminiProvider(ModelConfig(name="gemini", provider="gemini", model=model, base_url=base_url, timeout=5,
                                      api_key="AIza-upstream", **extra))


def ask(text: str, **extra: Any) -> ChatRequest:
    return ChatRequest([Message("user", [TextPart(text)])], **extra)


def body_of(p: GeminiProvider, request: ChatRequest, stream: bool = False) -> dict[str, Any]:
    return json.loads(p.chat_request(httpx.AsyncClient(), request, stream).content)


def test_urls_and_the_key_header() -> None:
    p = provider_class("gemini")(ModelConfig(name="g", provider="gemini", model="gemini-2.5-flash",
                                             base_url="https://generativelanguage.googleapis.com/", timeout=5,
                                             api_key="AIza-upstream"))
    assert isinstance(p, GeminiProvider) and p.serves == {"chat", "embeddings", "count_tokens"}
    plain = p.chat_request(httpx.AsyncClient(), ask("hi"), stream=False)
    streamed = p.chat_request(httpx.AsyncClient(), ask("hi"), stream=True)
    root = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
    assert str(plain.url) == root + ":generateContent"
    assert str(streamed.url) == root + ":streamGenerateContent?alt=sse"
    assert plain.headers["x-goog-api-key"] == "AIza-upstream" and "authorization" not in plain.headers
    assert gemini("http://127.0.0.1:1/v1beta", "models/gemini-2.0-flash").generate_url == (
        "http://127.0.0.1:1/v1beta/models/gemini-2.0-flash:generateContent")


def test_a_conversation_becomes_generate_content_json() -> None:
    request = ChatRequest(
        system="Be brief.",
        messages=[
            Message("user", [TextPart("Weather here?"), ImagePart("image/jpeg", data="/9j/4AAQ")]),
            Message("assistant", [TextPart("Checking."), ToolCall("call_1", "get_weather", '{"city":"Paris"}')]),
            Message("user", [ToolResult("call_1", "18C"), ToolResult("call_x", "boom", is_error=True,
                                                                         name="get_time")]),
        ],
        tools=[WEATHER], tool_choice="required", max_tokens=50, temperature=0.3, top_p=0.8, stop=["END"],
        reasoning_budget=512,
    )
    body = body_of(gemini(), request)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather here?"},
                                   {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}]},
        {"role": "model", "parts": [{"text": "Checking."},
                                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        # The function's name comes from the earlier call with that id (or from the result itself).
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
                                   {"functionResponse": {"name": "get_time", "response": {"error": "boom"}}}]},
    ]
    assert body["tools"] == [{"functionDeclarations": [{
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "OBJECT", "required": ["city"], "properties": {
            "city": {"type": "STRING", "description": "City name"},
            "unit": {"type": "STRING", "nullable": True, "enum": ["C", "F"]}}},
    }]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.3, "topP": 0.8,
                                        "stopSequences": ["END"], "thinkingConfig": {"thinkingBudget": 512}}


@pytest.mark.parametrize("choice, name, expected", [
    ("auto", None, {"mode": "AUTO"}), ("none", None, {"mode": "NONE"}),
    (None, "get_weather", {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice(choice: Any, name: Any, expected: Any) -> None:
    body = body_of(gemini(), ask("hi", tools=[WEATHER], tool_choice=choice, tool_choice_name=name))
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_reasoning_effort_becomes_a_thinking_budget() -> None:
    assert body_of(gemini(), ask("hi", reasoning_effort="low"))["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 1024}}
    with pytest.raises(GatewayError) as caught:
        body_of(gemini(), ask("hi", reasoning_effort="extreme"))
    assert caught.value.param == "reasoning_effort"


def test_a_tool_without_arguments_has_no_parameters() -> None:
    empty = Tool("now", None, {"type": "object", "properties": {}, "additionalProperties": False})
    assert body_of(gemini(), ask("hi", tools=[empty]))["tools"] == [{"functionDeclarations": [{"name": "now"}]}]


def test_json_schema_becomes_geminis_subset() -> None:
    schema = {
        "type": "object", "title": "Args", "$defs": {"Place": {"type": "object", "properties": {
            "name": {"type": "string", "format": "hostname"}, "kind": {"const": "city"}}}},
        "properties": {
            "place": {"$ref": "#/$defs/Place", "description": "Where"},
            "when": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            "n": {"type": "integer", "exclusiveMinimum": 0, "enum": [1, 2]},
            "tags": {"type": "array", "items": {"type": "string"}, "examples": [["a"]]},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["place", "ghost"],
    }
    assert gemini_schema(schema) == {
        "type": "OBJECT", "required": ["place"], "properties": {
            "place": {"type": "OBJECT", "description": "Where", "properties": {
                "name": {"type": "STRING", "description": "(format: hostname)"},
                "kind": {"type": "STRING", "enum": ["city"]}}},
            "when": {"type": "STRING", "format": "date-time", "nullable": True},
            "n": {"type": "INTEGER", "description": "(one of 1, 2)"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "either": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        }}
    with pytest.raises(GatewayError):
        gemini_schema({"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
                       "$ref": "#/$defs/Node"})


def test_images_by_url() -> None:
    def image(url: str) -> Any:
        return body_of(gemini(), ChatRequest([Message("user", [ImagePart(url=url)])]))["contents"][0]["parts"][0]

    assert image("https://example.com/cat.png?sig=1") == {
        "fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png?sig=1"}}
    assert image("gs://bucket/cat.jpg") == {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}}
    assert image("data:image/webp;base64,UklGRg==") == {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}}
    with pytest.raises(GatewayError) as caught:
        image("http://example.com/cat.png")
    assert caught.value.status == 400 and caught.value.param == "image_url"


def test_a_tool_result_without_a_known_call_is_refused() -> None:
    with pytest.raises(GatewayError) as caught:
        body_of(gemini(), ChatRequest([Message("user", [ToolResult("call_nowhere", "x")])]))
    assert caught.value.status == 400 and caught.value.param == "tool_call_id"


def test_more_than_five_stop_sequences_are_refused() -> None:
    with pytest.raises(GatewayError) as caught:
        body_of(gemini(), ask("hi", stop=list("abcdef")))
    assert caught.value.param == "stop"


def test_thought_signatures_travel_in_the_tool_call_id() -> None:
    answer = gemini().chat_response(json.dumps({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]}, "finishReason": "STOP"}]}).encode())
    first, second = answer.tool_calls
    assert set(first.id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")  # any client's id
    assert signature_of(first.id) == SIGNATURE and signature_of(second.id) is None
    history = ChatRequest([Message("user", [TextPart("hi")]), Message("assistant", [first, second])])
    parts = body_of(gemini("https://g", "gemini-3-pro-preview"), history)["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == SIGNATURE and "thoughtSignature" not in parts[1]
    # A Gemini 3 history built elsewhere (no signature) gets Google's placeholder on its first call.
    foreign = ChatRequest([Message("user", [TextPart("hi")]), Message("assistant", [
        ToolCall("toolu_1", "a", "{}"), ToolCall("toolu_2", "b", "{}")])])
    parts = body_of(gemini("https://g", "gemini-3-pro-preview"), foreign)["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == "skip_thought_signature_validator" and "thoughtSignature" not in parts[1]
    parts = body_of(gemini(), foreign)["contents"][1]["parts"]  # Gemini 2.5 checks none
    assert all("thoughtSignature" not in p for p in parts)


def test_geminis_own_call_id_is_used_when_it_gives_one() -> None:
    answer = gemini().chat_response(json.dumps({"candidates": [{"content": {"parts": [
        {"functionCall": {"id": "fc-123", "name": "f", "args": {}}}]}, "finishReason": "STOP"}]}).encode())
    assert answer.tool_calls[0].id == "fc-123"


# -- answers -------------------------------------------------------------------------------------------


def test_an_answer_becomes_a_chat_response() -> None:
    answer = gemini().chat_response(json.dumps({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me think.", "thought": True}, {"text": "Hello "}, {"text": "there."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                          "cachedContentTokenCount": 4, "totalTokenCount": 22},
        "modelVersion": "gemini-2.5-flash", "responseId": "resp-1",
    }).encode())
    assert answer.text == "Hello there." and answer.finish == "tool_calls" and answer.id == "resp-1"
    assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert answer.usage == TokenUsage(10, 12, 22, cached_tokens=4, reasoning_tokens=7)


@pytest.mark.parametrize("reason, finish", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("OTHER", "stop"),
])
def test_finish_reasons(reason: str, finish: str) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert gemini().chat_response(json.dumps(body).encode()).finish == finish


def test_a_blocked_prompt_is_a_content_filter_finish() -> None:
    answer = gemini().chat_response(b'{"promptFeedback": {"blockReason": "SAFETY"}, '
                                    b'"usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}}')
    assert (answer.parts, answer.finish, answer.usage) == ([], "content_filter", TokenUsage(3, 0, 3))


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


STREAM = b"".join([
    sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Thinking", "thought": True}]}}]}),
    sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
         "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}),
    sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
    sse({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_time", "args": {}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "thoughtsTokenCount": 2,
                          "totalTokenCount": 17}}),
])


def stream_events(events: list[Any]) -> list[Any]:
    """The events with made-up tool-call ids replaced, to compare runs."""
    return [ToolCallStart(e.index, "<id>", e.name) if isinstance(e, ToolCallStart) else e for e in events]


EVENTS = [
    TextDelta("Hel"), TextDelta("lo"),
    ToolCallStart(0, "<id>", "get_weather"), ToolCallDelta(0, '{"city":"Paris"}'),
    ToolCallStart(1, "<id>", "get_time"), ToolCallDelta(1, "{}"),
    Finish("tool_calls"), UsageReport(TokenUsage(9, 8, 17, reasoning_tokens=2)),
]


def test_a_stream_becomes_neutral_events() -> None:
    decoder = gemini().stream_decoder()
    assert stream_events(decoder.feed(STREAM)) == EVENTS and decoder.done


def test_a_stream_split_at_every_byte_boundary_gives_the_same_events() -> None:
    for cut in range(1, len(STREAM)):
        decoder = gemini().stream_decoder()
        events = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert stream_events(events) == EVENTS and decoder.done, cut


def test_a_stream_is_done_only_once_a_chunk_says_why_it_finished() -> None:
    decoder = gemini().stream_decoder()
    decoder.feed(STREAM[: STREAM.rindex(b"data: ")])
    assert not decoder.done


def test_an_error_inside_the_stream_is_a_502_with_geminis_wording() -> None:
    decoder = gemini().stream_decoder()
    with pytest.raises(GatewayError) as caught:
        decoder.feed(sse({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]})
                     + sse({"error": {"code": 500, "message": "An internal error has occurred.",
                                      "status": "INTERNAL"}}))
    assert (caught.value.status, caught.value.code) == (502, "INTERNAL")
    assert caught.value.message == "An internal error has occurred."


# -- errors ------------------------------------------------------------------------------------------------


def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status,
                                 **({"details": details} if details else {})}}).encode()


def test_gemini_errors_map_to_statuses_with_their_wording() -> None:
    p = gemini()
    limited = p.error(429, {}, error_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric",
                                          [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                            "retryDelay": "6.2s"}]))
    assert (limited.status, limited.type, limited.code, limited.headers) == (
        429, "rate_limit_error", "RESOURCE_EXHAUSTED", {"retry-after": "7"})
    bad = p.error(400, {}, error_body(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0]'"))
    assert (bad.status, bad.message, bad.code) == (400, "Invalid value at 'contents[0]'", "INVALID_ARGUMENT")
    key = p.error(400, {}, error_body(400, "INVALID_ARGUMENT", "API key not valid.",
                                      [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                        "reason": "API_KEY_INVALID"}]))
    assert key.status == 502  # the gateway's credentials, not the client's request
    assert p.error(503, {}, error_body(503, "UNAVAILABLE", "The model is overloaded.")).status in (502, 503)
    listed = p.error(400, {}, b"[" + error_body(400, "INVALID_ARGUMENT", "in a list") + b"]")
    assert listed.message == "in a list"


# -- embeddings and counting ----------------------------------------------------------------------------------


def test_embeddings_both_ways() -> None:
    p = gemini(model="gemini-embedding-001")
    built = p.embeddings_request(httpx.AsyncClient(), EmbeddingsRequest(["a", "b"], dimensions=3))
    assert str(built.url).endswith("/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert json.loads(built.content) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3}]}
    answer = p.embeddings_response(b'{"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}')
    assert answer.vectors == [[0.1, 0.2], [0.3, 0.4]] and answer.usage is None


def test_count_tokens_sends_the_whole_request() -> None:
    p = gemini()
    built = p.count_tokens_request(httpx.AsyncClient(), ask("hi", system="sys", tools=[WEATHER], max_tokens=5))
    assert str(built.url).endswith(":countTokens")
    inner = json.loads(built.content)["generateContentRequest"]
    assert inner["model"] == "models/gemini-2.5-flash" and inner["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert "tools" in inner and "generationConfig" not in inner
    assert p.count_tokens_response(b'{"totalTokens": 31}') == 31


# -- loopback, against the mock -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Any:
    app = GeminiMock(api_key="AIza-upstream")
    server = ServerThread(app).start()
    yield app, server.url
    server.stop()


async def exchange(request: httpx.Request) -> tuple[int, dict[str, str], bytes]:
    async with httpx.AsyncClient() as client:
        response = await client.send(request, stream=True)
        return response.status_code, dict(response.headers), await response.aread()


def test_round_trip_through_the_mock(mock: tuple[GeminiMock, str]) -> None:
    app, url = mock
    p = gemini(url, "gemini-3-flash-preview")
    client = httpx.AsyncClient()
    status, _, body = asyncio.run(exchange(p.chat_request(
        client, ask("Weather? #mock tool=get_weather thinking=1", tools=[WEATHER]), stream=True)))
    assert status == 200
    decoder = p.stream_decoder()
    events = decoder.feed(body)
    assert decoder.done and Finish("tool_calls") in events
    start = next(e for e in events if isinstance(e, ToolCallStart))
    assert start.name == "get_weather" and signature_of(start.id) == SIGNATURE
    assert json.loads("".join(e.arguments for e in events if isinstance(e, ToolCallDelta))) == {"city": "Paris"}
    usage = next(e for e in events if isinstance(e, UsageReport)).usage
    assert usage.reasoning_tokens == 7 and usage.completion_tokens == 8 + 7
    sent = app.requests[-1]
    assert sent["headers"]["x-goog-api-key"] == "AIza-upstream" and sent["query"] == "alt=sse"

    # The tool's answer goes back with the signature the client never saw as such.
    follow_up = ChatRequest([
        Message("user", [TextPart("Weather?")]),
        Message("assistant", [ToolCall(start.id, start.name, '{"city":"Paris"}')]),
        Message("user", [ToolResult(start.id, "18C")]),
    ])
    status, _, body = asyncio.run(exchange(p.chat_request(client, follow_up, stream=False)))
    answer = p.chat_response(body)
    assert status == 200 and answer.text == "Tool result: 18C"  # the mock quotes the result it was handed
    contents = app.requests[-1]["json"]["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == SIGNATURE
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"

    status, _, body = asyncio.run(exchange(p.embeddings_request(client, EmbeddingsRequest(["a", "b"], 4))))
    assert status == 200 and [len(v) for v in p.embeddings_response(body).vectors] == [4, 4]
    status, _, body = asyncio.run(exchange(p.count_tokens_request(client, ask("count me"))))
    assert status == 200 and p.count_tokens_response(body) > 0


def test_the_mock_refuses_and_fails_the_gemini_way(mock: tuple[GeminiMock, str]) -> None:
    _, url = mock
    p = gemini(url)
    client = httpx.AsyncClient()
    status, headers, body = asyncio.run(exchange(p.chat_request(client, ask("hi #mock status=429"), False)))
    error = p.error(status, headers, body)
    assert (error.status, error.code, error.headers) == (429, "RESOURCE_EXHAUSTED", {"retry-after": "7"})
    status, _, body = asyncio.run(exchange(p.chat_request(client, ask("hi #mock fail_after=1 words=9"), True)))
    decoder = p.stream_decoder()
    with pytest.raises(GatewayError) as caught:
        decoder.feed(body)
    assert caught.value.code == "INTERNAL" and not decoder.done
    wrong = GeminiProvider(ModelConfig(name="g", provider="gemini", model="gemini-2.5-flash", base_url=url,
                                       timeout=5, api_key="wrong"))
    status, headers, body = asyncio.run(exchange(wrong.chat_request(client, ask("hi"), False)))
    assert status == 400 and wrong.error(status, headers, body).status == 502
