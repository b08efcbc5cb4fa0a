"""The OpenAI-compatible provider's translated path: neutral <-> chat completions, both ways.

Request bodies are checked against the ``openai`` SDK's own request types, and
the answers it reads are shapes the SDK's response types accept; one round
trip runs over loopback HTTP against the mock OpenAI-compatible upstream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import TypeAdapter

from aisix.config import ModelConfig
from aisix.errors import GatewayError
from aisix.local.mock_upstream import MockUpstream
from aisix.providers.base import Provider
from aisix.providers.openai import OpenAIProvider
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

WEATHER = Tool("get_weather", "The weather in a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


def provider(base_url: str = "http://127.0.0.1:9/v1", model: str = "llama3", **extra: Any) -> OpenAIProvider:
    return OpenAIProvider(ModelConfig(name="m", provider="openai", model=model, base_url=base_url, timeout=5,
                                      api_key="sk-upstream", **extra))


def body_of(p: OpenAIProvider, request: ChatRequest, stream: bool = False) -> dict[str, Any]:
    built = p.chat_request(httpx.AsyncClient(), request, stream)
    return json.loads(built.content)


CONVERSATION = ChatRequest(
    system="Be brief.",
    messages=[
        Message("user", [TextPart("Weather in Paris? Here is a map:"), ImagePart("image/png", data="iVBORw0KGgo=")]),
        Message("assistant", [TextPart("Let me look."), ToolCall("call_1", "get_weather", '{"city":"Paris"}')]),
        Message("user", [ToolResult("call_1", "18C and sunny"), TextPart("And tomorrow?")]),
    ],
    tools=[WEATHER], tool_choice="auto", max_tokens=100, temperature=0.2, top_p=0.9, stop=["END"],
)


def test_a_conversation_becomes_chat_completions_json_the_sdk_accepts() -> None:
    p = provider()
    body = body_of(p, CONVERSATION)
    assert body["model"] == "llama3"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris? Here is a map:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        ]},
        # The tool's answer first (it must follow the tool call at once), then the user's text.
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER.parameters}}]
    assert (body["tool_choice"], body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (
        "auto", 100, 0.2, 0.9, ["END"])
    assert "stream" not in body and "reasoning_effort" not in body and "max_completion_tokens" not in body
    messages = TypeAdapter(list[ChatCompletionMessageParam])
    for message in messages.validate_python(body["messages"]):
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            list(content)  # the SDK's content parts validate lazily: iterate them
    TypeAdapter(list[ChatCompletionToolParam]).validate_python(body["tools"])


def test_stream_asks_for_usage_and_reasoning_effort_is_sent_only_when_set() -> None:
    p = provider(model="o4-mini")
    request = ChatRequest([Message("user", [TextPart("hi")])], reasoning_effort="low")
    body = body_of(p, request, stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["reasoning_effort"] == "low"
    p.accepts_stream_options = False  # a strict server refused it before: not asked again
    assert "stream_options" not in body_of(p, request, stream=True)


@pytest.mark.parametrize(("model", "sent"), [
    ("gpt-4o-mini", None), ("llama3", None), ("gpt-5-chat-latest", None), ("o3", "high"), ("gpt-5-mini", "high"),
    ("openai/gpt-oss-120b", "high"),
])
def test_reasoning_effort_goes_to_reasoning_models_only(model: str, sent: str | None) -> None:
    """OpenAI refuses reasoning_effort on other models (gpt-4o-mini: 400): there it is dropped, and said."""
    request = ChatRequest([Message("user", [TextPart("hi")])], reasoning_effort="high")
    assert body_of(provider(model=model), request).get("reasoning_effort") == sent
    assert any(note.startswith("reasoning") for note in request.notes)
    budget = ChatRequest([Message("user", [TextPart("hi")])], reasoning_budget=2048)
    assert body_of(provider(model=model), budget).get("reasoning_effort") == (sent and "low")


def test_prompt_cache_key_goes_to_openai_itself_only() -> None:
    request = ChatRequest([Message("user", [TextPart("hi")])], cache_key="session-1")
    assert body_of(provider(base_url="https://api.openai.com/v1"), request)["prompt_cache_key"] == "session-1"
    assert "prompt_cache_key" not in body_of(provider(), request)


@pytest.mark.parametrize("choice, name, expected", [
    ("none", None, "none"), ("required", None, "required"),
    (None, "get_weather", {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice(choice: Any, name: Any, expected: Any) -> None:
    request = ChatRequest([Message("user", [TextPart("hi")])], tools=[WEATHER], tool_choice=choice,
                          tool_choice_name=name)
    assert body_of(provider(), request)["tool_choice"] == expected


@pytest.mark.parametrize("base_url, model, field", [
    ("http://vllm:8000/v1", "llama3", "max_tokens"),  # what every compatible server takes
    ("https://api.openai.com/v1", "gpt-4o-mini", "max_completion_tokens"),  # OpenAI deprecated max_tokens
    ("https://proxy.example/v1", "o3-mini", "max_completion_tokens"),  # reasoning models refuse max_tokens
])
def test_the_output_budget_field_suits_the_upstream(base_url: str, model: str, field: str) -> None:
    body = body_of(provider(base_url, model), ChatRequest([Message("user", [TextPart("hi")])], max_tokens=7))
    other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
    assert body[field] == 7 and other not in body


def test_the_models_max_tokens_is_the_default_budget() -> None:
    body = body_of(provider(max_tokens=321), ChatRequest([Message("user", [TextPart("hi")])]))
    assert body["max_tokens"] == 321


def test_an_image_by_url_is_passed_as_is() -> None:
    request = ChatRequest([Message("user", [ImagePart(url="https://example.com/cat.jpg")])])
    assert body_of(provider(), request)["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]


def test_an_image_in_an_assistant_message_is_refused_by_name() -> None:
    request = ChatRequest([Message("assistant", [ImagePart(url="https://example.com/cat.jpg")])])
    with pytest.raises(GatewayError) as caught:
        body_of(provider(), request)
    assert caught.value.status == 400 and caught.value.param == "image"


# -- answers ------------------------------------------------------------------------------------


COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Checking.", "refusal": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]}}],
    "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70,
              "prompt_tokens_details": {"cached_tokens": 32}, "completion_tokens_details": {"reasoning_tokens": 12}},
}


def test_a_completion_becomes_a_chat_response() -> None:
    ChatCompletion.model_validate(COMPLETION)  # a shape OpenAI's own SDK reads
    answer = provider().chat_response(json.dumps(COMPLETION).encode())
    assert answer.text == "Checking." and answer.finish == "tool_calls" and answer.id == "chatcmpl-1"
    assert answer.tool_calls == [ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
                                 ToolCall("call_b", "get_time", "{}")]
    assert answer.usage == TokenUsage(50, 20, 70, cached_tokens=32, reasoning_tokens=12)


@pytest.mark.parametrize("raw, finish", [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"), ("function_call", "tool_calls"),
    ("content_filter", "content_filter"), (None, "stop"),
])
def test_finish_reasons(raw: Any, finish: str) -> None:
    answer = {**COMPLETION, "choices": [{"index": 0, "finish_reason": raw,
                                         "message": {"role": "assistant", "content": "x"}}]}
    assert provider().chat_response(json.dumps(answer).encode()).finish == finish


def test_an_answer_that_is_not_json_is_a_502() -> None:
    with pytest.raises(GatewayError) as caught:
        provider().chat_response(b"<html>oops</html>")
    assert caught.value.status == 502


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    data = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": choices,
            "usage": usage}
    ChatCompletionChunk.model_validate(data)
    return b"data: " + json.dumps(data).encode() + b"\n\n"


STREAM = b"".join([
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "get_time", "arguments": "{}"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                       "completion_tokens_details": {"reasoning_tokens": 2}}),
    b"data: [DONE]\n\n",
])
EVENTS = [
    TextDelta("Let me "), TextDelta("check."),
    ToolCallStart(0, "call_a", "get_weather"), ToolCallDelta(0, '{"city"'),
    ToolCallStart(1, "call_b", "get_time"), ToolCallDelta(1, "{}"),
    ToolCallDelta(0, ': "Paris"}'),
    Finish("tool_calls"),
    UsageReport(TokenUsage(9, 4, 13, reasoning_tokens=2)),
]


def test_a_stream_becomes_neutral_events() -> None:
    decoder = provider().stream_decoder()
    assert decoder.feed(STREAM) == EVENTS and decoder.done


def test_a_stream_split_at_every_byte_boundary_gives_the_same_events() -> None:
    for cut in range(1, len(STREAM)):
        decoder = provider().stream_decoder()
        events = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert events == EVENTS and decoder.done, cut
    decoder = provider().stream_decoder()
    events = [e for i in range(len(STREAM)) for e in decoder.feed(STREAM[i:i + 1])]
    assert events == EVENTS and decoder.done


def test_a_stream_is_done_only_at_its_done_marker() -> None:
    decoder = provider().stream_decoder()
    decoder.feed(STREAM[: STREAM.index(b"data: [DONE]")])
    assert not decoder.done


def test_an_error_event_in_the_stream_is_a_502_with_the_upstreams_wording() -> None:
    decoder = provider().stream_decoder()
    with pytest.raises(GatewayError) as caught:
        decoder.feed(chunk({"content": "Hi"}) + b'data: {"error": {"message": "The server had an error '
                                                b'(sk-upstream)", "type": "server_error"}}\n\n')
    assert caught.value.status == 502 and "The server had an error" in caught.value.message
    assert "sk-upstream" not in caught.value.message


def test_an_event_that_is_not_json_is_a_502() -> None:
    with pytest.raises(GatewayError):
        provider().stream_decoder().feed(b"data: {not json\n\n")


# -- embeddings, errors, the raw pass-through ------------------------------------------------------------


def test_embeddings_both_ways() -> None:
    p = provider()
    built = p.embeddings_request(httpx.AsyncClient(), EmbeddingsRequest(["a", "b"], dimensions=8))
    assert str(built.url) == "http://127.0.0.1:9/v1/embeddings"
    assert json.loads(built.content) == {"model": "llama3", "input": ["a", "b"], "encoding_format": "float",
                                         "dimensions": 8}
    answer = p.embeddings_response(json.dumps({
        "object": "list", "model": "m", "usage": {"prompt_tokens": 4, "total_tokens": 4},
        "data": [{"object": "embedding", "index": 1, "embedding": [0.5]},
                 {"object": "embedding", "index": 0, "embedding": [0.25]}],
    }).encode())
    assert answer.vectors == [[0.25], [0.5]] and answer.usage == TokenUsage(4, 0, 4)


@pytest.mark.parametrize("status, client_status", [(400, 400), (429, 429), (401, 502), (500, 502)])
def test_openai_errors_keep_their_wording(status: int, client_status: int) -> None:
    body = json.dumps({"error": {"message": "Invalid 'messages': too long.", "type": "invalid_request_error",
                                 "param": "messages", "code": "context_length_exceeded"}}).encode()
    error = provider().error(status, {"retry-after": "7"}, body)
    assert error.status == client_status
    if status == 400:
        assert (error.message, error.param, error.code) == (
            "Invalid 'messages': too long.", "messages", "context_length_exceeded")
    if status == 429:
        assert error.headers == {"retry-after": "7"}


def test_the_raw_pass_through_is_unchanged() -> None:
    p = provider()
    assert isinstance(p, Provider) and p.kind == "openai" and "openai_chat" in p.native_dialects
    built = p.build_request(httpx.AsyncClient(), {"model": "alias", "messages": [], "x": 1,
                                                  "stream_options": {"other": 1}}, stream=True, with_usage=True)
    assert str(built.url) == "http://127.0.0.1:9/v1/chat/completions"
    assert built.headers["authorization"] == "Bearer sk-upstream" and built.headers["accept"] == "text/event-stream"
    assert json.loads(built.content) == {"model": "llama3", "messages": [], "x": 1,
                                         "stream_options": {"other": 1, "include_usage": True}}
    assert p.rejects_stream_options(400, b"Unrecognized request argument supplied: stream_options")


# -- a round trip over loopback -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Any:
    server = ServerThread(MockUpstream()).start()
    yield server.url
    server.stop()


async def exchange(p: OpenAIProvider, request: ChatRequest, stream: bool) -> tuple[int, bytes]:
    async with httpx.AsyncClient() as client:
        response = await client.send(p.chat_request(client, request, stream), stream=True)
        return response.status_code, await response.aread()


def test_round_trip_through_the_mock_upstream(mock: str) -> None:
    p = provider(mock + "/v1")
    ask = ChatRequest([Message("user", [TextPart("Weather in Paris? #mock tool=get_weather")])], tools=[WEATHER])
    status, body = asyncio.run(exchange(p, ask, stream=True))
    assert status == 200
    decoder = p.stream_decoder()
    events = decoder.feed(body)
    assert decoder.done
    start = next(e for e in events if isinstance(e, ToolCallStart))
    assert start.name == "get_weather"
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert json.loads(arguments) == {"city": "Paris"}
    assert len([e for e in events if isinstance(e, ToolCallDelta)]) > 1  # it came in fragments
    assert Finish("tool_calls") in events and any(isinstance(e, UsageReport) for e in events)

    status, body = asyncio.run(exchange(p, ChatRequest([Message("user", [TextPart("Hi #mock words=3")])]), False))
    ChatCompletion.model_validate_json(body)
    answer = p.chat_response(body)
    assert (status, answer.text, answer.finish) == (200, "Once upon a", "stop")
    assert answer.usage is not None and answer.usage.completion_tokens == 3


def test_a_prepared_post_is_what_the_client_would_have_built() -> None:
    """`Provider.post` merges the client's headers and parses the URL once; what it builds must be the
    request ``client.build_request`` builds, call after call (and again for another client)."""
    p = provider()
    for client in (httpx.AsyncClient(), httpx.AsyncClient(headers={"user-agent": "other"})):
        for stream in (False, True, False):
            headers = p.stream_headers if stream else p.headers
            ours = p.post(client, p.url, b'{"a":1}', headers)
            theirs = client.build_request("POST", p.url, content=b'{"a":1}', headers=headers, timeout=p.timeout)
            assert (ours.method, ours.url, ours.headers.raw, ours.extensions, ours.content) == \
                   (theirs.method, theirs.url, theirs.headers.raw, theirs.extensions, theirs.content)
        ours.extensions["trace"] = "set by a transport"  # one request's extensions never leak into the next
        assert "trace" not in p.post(client, p.url, b"{}", p.headers).extensions
