"""The Bedrock provider: neutral ↔ Converse JSON, the binary event stream, errors, SigV4, and the mock.

What the provider writes is checked against botocore's ``bedrock-runtime`` service
model (the shapes boto3 validates with), and what the mock answers is parsed with
botocore's own response and event-stream parsers, so both speak what the real
service and its official client speak.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
from dataclasses import replace
from typing import Any, Iterator

import botocore.auth
import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.parsers import EventStreamJSONParser, RestJSONParser
from botocore.validate import ParamValidator

from aisix.call import TokenUsage
from aisix.config import ModelConfig
from aisix.errors import GatewayError
from aisix.providers.client import make_upstream_client
from aisix.local.mocks.bedrock import BedrockMock, encode_frame, event_frame, exception_frame
from aisix.providers.bedrock import BedrockProvider, BedrockStreamDecoder
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
from conftest import ServerThread

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
WEATHER = Tool("get_weather", "The weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})


def model(**overrides: Any) -> ModelConfig:
    base = ModelConfig(name="nova", provider="bedrock", model="amazon.nova-lite-v1:0",
                       base_url="https://bedrock-runtime.us-east-1.amazonaws.com", timeout=30, region="us-east-1")
    return replace(base, **overrides)


@pytest.fixture(scope="module")
def service() -> Any:
    return botocore.session.get_session().get_service_model("bedrock-runtime")


def assert_valid_converse(service: Any, model_id: str, body: dict[str, Any]) -> None:
    """``body`` is a Converse request botocore would accept (blobs are bytes on that side)."""
    params = json.loads(json.dumps(body))
    for message in params["messages"]:
        for block in message["content"]:
            if "image" in block:
                block["image"]["source"]["bytes"] = base64.b64decode(block["image"]["source"]["bytes"])
    report = ParamValidator().validate({"modelId": model_id, **params},
                                       service.operation_model("Converse").input_shape)
    assert not report.has_errors(), report.generate_report()


def build(provider: BedrockProvider, request: ChatRequest, stream: bool = False) -> httpx.Request:
    return provider.chat_request(httpx.AsyncClient(), request, stream)


# -- neutral → Converse -----------------------------------------------------------


def test_a_full_request_becomes_converse_json(service: Any) -> None:
    provider = BedrockProvider(model())
    request = ChatRequest(
        system="Be brief.",
        messages=[
            Message("user", [TextPart("Weather in Paris? Here is a map:"), ImagePart("image/png", PNG)]),
            Message("assistant", [TextPart(""), ToolCall("call_1", "get_weather", '{"city": "Paris"}')]),
            Message("user", [ToolResult("call_1", "rain", is_error=False)]),
            Message("user", [ToolResult("call_2", "timed out", is_error=True), TextPart("And now?")]),
        ],
        tools=[WEATHER], tool_choice="auto", max_tokens=300, temperature=0.2, top_p=0.9, stop=["END"],
    )
    sent = build(provider, request)
    assert str(sent.url) == ("https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1:0/converse")
    assert sent.headers["content-type"] == "application/json" and "authorization" not in sent.headers
    body = json.loads(sent.content)
    assert body == {
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"text": "Weather in Paris? Here is a map:"},
                {"image": {"format": "png", "source": {"bytes": PNG}}}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
            {"role": "user", "content": [  # consecutive user messages merged: Converse wants turns to alternate
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "rain"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "timed out"}], "status": "error"}},
                {"text": "And now?"}]},
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "The weather in a city.",
                                               "inputSchema": {"json": WEATHER.parameters}}}],
                       "toolChoice": {"auto": {}}},
    }
    assert_valid_converse(service, provider.model.model, body)
    streamed = build(provider, request, stream=True)
    assert str(streamed.url).endswith("/converse-stream")
    assert streamed.headers["accept"] == "application/vnd.amazon.eventstream"
    assert json.loads(streamed.content) == body


def test_max_tokens_comes_from_the_request_then_the_model_then_the_default() -> None:
    def max_tokens(provider: BedrockProvider, request: ChatRequest) -> int | None:
        return json.loads(build(provider, request).content).get("inferenceConfig", {}).get("maxTokens")

    hello = [Message("user", [TextPart("hi")])]
    # Converse's own default for a model that needs none: the model's maximum (no small cap).
    assert max_tokens(BedrockProvider(model()), ChatRequest(hello)) is None
    # Anthropic models need one: Anthropic's rule (32,000, or an older model's lower limit).
    claude = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert max_tokens(BedrockProvider(model(model=claude)), ChatRequest(hello)) == 32000
    assert max_tokens(BedrockProvider(model(model="anthropic.claude-3-5-haiku-20241022-v1:0")),
                      ChatRequest(hello)) == 8192
    assert max_tokens(BedrockProvider(model(max_tokens=777)), ChatRequest(hello)) == 777
    assert max_tokens(BedrockProvider(model(max_tokens=777)), ChatRequest(hello, max_tokens=55)) == 55


@pytest.mark.parametrize(("choice", "name", "expected"), [
    ("required", None, {"any": {}}),
    (None, "get_weather", {"tool": {"name": "get_weather"}}),
    (None, None, None),
])
def test_tool_choice(choice: Any, name: Any, expected: Any, service: Any) -> None:
    request = ChatRequest([Message("user", [TextPart("hi")])], tools=[WEATHER], tool_choice=choice,
                          tool_choice_name=name)
    body = json.loads(build(BedrockProvider(model()), request).content)
    assert body["toolConfig"].get("toolChoice") == expected
    assert_valid_converse(service, "m", body)


def test_tool_choice_none_leaves_the_tools_out_and_is_refused_once_tools_were_called() -> None:
    provider = BedrockProvider(model())
    plain = ChatRequest([Message("user", [TextPart("hi")])], tools=[WEATHER], tool_choice="none")
    assert "toolConfig" not in json.loads(build(provider, plain).content)
    with_calls = ChatRequest([
        Message("user", [TextPart("hi")]),
        Message("assistant", [ToolCall("c1", "get_weather", "{}")]),
        Message("user", [ToolResult("c1", "sun")]),
    ], tools=[WEATHER], tool_choice="none")
    with pytest.raises(GatewayError) as refused:
        build(provider, with_calls)
    assert refused.value.status == 400 and refused.value.param == "tool_choice"


def test_images_by_url_are_refused_and_data_urls_are_carried() -> None:
    provider = BedrockProvider(model())
    with pytest.raises(GatewayError) as refused:
        build(provider, ChatRequest([Message("user", [ImagePart(url="https://example.com/cat.png")])]))
    assert refused.value.status == 400 and refused.value.param == "image_url"
    data_url = ImagePart(url=f"data:image/jpeg;base64,{PNG}")
    body = json.loads(build(provider, ChatRequest([Message("user", [data_url])])).content)
    assert body["messages"][0]["content"] == [{"image": {"format": "jpeg", "source": {"bytes": PNG}}}]
    with pytest.raises(GatewayError) as refused:
        build(provider, ChatRequest([Message("user", [ImagePart("image/tiff", PNG)])]))
    assert refused.value.status == 400


def test_reasoning_is_sent_to_anthropic_and_nova_2_models_only(service: Any) -> None:
    hello = [Message("user", [TextPart("think")])]
    claude = BedrockProvider(model(model="us.anthropic.claude-sonnet-4-5-20250929-v1:0"))
    body = json.loads(build(claude, ChatRequest(hello, reasoning_budget=2048, max_tokens=8000)).content)
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert body["inferenceConfig"]["maxTokens"] == 8000
    body = json.loads(build(claude, ChatRequest(hello, reasoning_effort="high")).content)
    budget = body["additionalModelRequestFields"]["thinking"]["budget_tokens"]
    assert body["inferenceConfig"]["maxTokens"] > budget  # Anthropic refuses a budget that leaves no room
    request = ChatRequest(hello, reasoning_effort="high")
    body = json.loads(build(BedrockProvider(model()), request).content)
    assert "additionalModelRequestFields" not in body
    assert "reasoning dropped (this Bedrock model takes none through Converse)" in request.notes
    nova2 = BedrockProvider(model(model="us.amazon.nova-2-lite-v1:0"))
    body = json.loads(build(nova2, ChatRequest(hello, reasoning_effort="medium")).content)
    assert body["additionalModelRequestFields"] == {"reasoningConfig": {"type": "enabled",
                                                                        "maxReasoningEffort": "medium"}}
    body = json.loads(build(nova2, ChatRequest(hello, reasoning_budget=2048)).content)
    assert body["additionalModelRequestFields"]["reasoningConfig"]["maxReasoningEffort"] == "low"
    assert_valid_converse(service, "m", body)


def test_thinking_is_left_out_when_the_turn_continues_a_translated_tool_call() -> None:
    claude = BedrockProvider(model(model="us.anthropic.claude-sonnet-4-5-20250929-v1:0"))
    loop = [Message("user", [TextPart("run")]), Message("assistant", [ToolCall("c1", "Bash", "{}")]),
            Message("user", [ToolResult("c1", "done")])]
    request = ChatRequest(loop, reasoning_effort="high")
    body = json.loads(build(claude, request).content)
    assert "additionalModelRequestFields" not in body
    assert any("thinking not sent" in note for note in request.notes)


@pytest.mark.parametrize(("model_id", "cached"), [
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", True), ("anthropic.claude-3-5-haiku-20241022-v1:0", True),
    ("amazon.nova-lite-v1:0", True), ("anthropic.claude-3-haiku-20240307-v1:0", False),
    ("meta.llama3-70b-instruct-v1:0", False),
])
def test_cache_marks_become_cache_points_for_models_that_take_them(service: Any, model_id: str,
                                                                   cached: bool) -> None:
    request = ChatRequest([Message("user", [TextPart("doc", cache=True), TextPart("question")])], system="S",
                          cache_system=True, cache_tools=True, tools=[WEATHER])
    body = json.loads(build(BedrockProvider(model(model=model_id)), request).content)
    points = json.dumps(body).count('"cachePoint"')
    if not cached:
        assert points == 0 and any("prompt caching dropped" in note for note in request.notes)
        return
    assert body["system"] == [{"text": "S"}, {"cachePoint": {"type": "default"}}]
    assert body["messages"][0]["content"] == [{"text": "doc"}, {"cachePoint": {"type": "default"}},
                                              {"text": "question"}]
    # Tools take a cache point on Anthropic models only (Nova: system and messages).
    assert (body["toolConfig"]["tools"][-1] == {"cachePoint": {"type": "default"}}) == ("anthropic" in model_id)
    assert_valid_converse(service, "m", body)


def test_tool_call_arguments_that_are_not_an_object_are_refused() -> None:
    request = ChatRequest([Message("assistant", [ToolCall("c1", "f", "[1, 2]")])])
    with pytest.raises(GatewayError) as refused:
        build(BedrockProvider(model()), request)
    assert refused.value.status == 400


# -- Converse → neutral -----------------------------------------------------------


def test_a_converse_answer_becomes_a_chat_response() -> None:
    answer = {
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
            {"text": "Let me look."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 115,
                  "cacheReadInputTokens": 80, "cacheWriteInputTokens": 20},
        "metrics": {"latencyMs": 300},
    }
    response = BedrockProvider(model()).chat_response(json.dumps(answer).encode())
    assert response.text == "Let me look."
    assert response.tool_calls == [ToolCall("tooluse_1", "get_weather", '{"city": "Paris"}')]
    assert response.finish == "tool_calls"
    assert response.usage == TokenUsage(prompt_tokens=110, completion_tokens=5, total_tokens=115,
                                        cached_tokens=80, cache_write_tokens=20)


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
    ("model_context_window_exceeded", "length"),
])
def test_stop_reasons(stop: str, finish: str) -> None:
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop}
    assert BedrockProvider(model()).chat_response(json.dumps(answer).encode()).finish == finish


def test_an_answer_that_is_not_converse_is_a_502() -> None:
    with pytest.raises(GatewayError) as failed:
        BedrockProvider(model()).chat_response(b'{"choices": []}')
    assert failed.value.status == 502


# -- the stream -------------------------------------------------------------------


def converse_stream() -> bytes:
    """A ConverseStream answer with text and a tool call in fragments, as Bedrock frames it."""
    frames = [
        event_frame("messageStart", {"role": "assistant"}),
        event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Looking"}}),
        event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " it up."}}),
        event_frame("contentBlockStop", {"contentBlockIndex": 0}),
        event_frame("contentBlockStart", {"contentBlockIndex": 1, "start": {
            "toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}}),
        event_frame("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}}),
        event_frame("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ' "Paris"}'}}}),
        event_frame("contentBlockStop", {"contentBlockIndex": 1}),
        event_frame("messageStop", {"stopReason": "tool_use"}),
        event_frame("metadata", {"usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
                                 "metrics": {"latencyMs": 90}}),
    ]
    return b"".join(frames)


EXPECTED = [
    TextDelta("Looking"), TextDelta(" it up."), ToolCallStart(0, "tooluse_9", "get_weather"),
    ToolCallDelta(0, '{"city":'), ToolCallDelta(0, ' "Paris"}'), Finish("tool_calls"),
    UsageReport(TokenUsage(prompt_tokens=12, completion_tokens=7, total_tokens=19)),
]


def test_the_mock_frames_decode_with_botocore_and_parse_as_converse_stream_events(service: Any) -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(converse_stream())
    types = [message.headers[":event-type"] for message in buffer]
    assert types[0] == "messageStart" and types[-2:] == ["messageStop", "metadata"]

    class Raw:
        def stream(self) -> Iterator[bytes]:
            yield converse_stream()

    shape = service.operation_model("ConverseStream").output_shape.members["stream"]
    parsed = list(EventStream(Raw(), shape, EventStreamJSONParser(), "ConverseStream"))
    assert parsed[4] == {"contentBlockStart": {"contentBlockIndex": 1, "start": {
        "toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}}}
    assert parsed[-1]["metadata"]["usage"]["totalTokens"] == 19


def test_stream_split_at_every_byte_boundary_gives_the_same_events() -> None:
    data = converse_stream()
    for cut in range(1, len(data)):
        decoder = BedrockStreamDecoder(model())
        events = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert events == EXPECTED, cut
        assert decoder.done
    decoder = BedrockStreamDecoder(model())
    events = [event for byte in range(len(data)) for event in decoder.feed(data[byte:byte + 1])]
    assert events == EXPECTED and decoder.done


def test_the_stream_is_done_only_once_its_metadata_followed_the_stop() -> None:
    data = converse_stream()
    cut = data.rindex(event_frame("metadata", {"usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
                                               "metrics": {"latencyMs": 90}}))
    decoder = BedrockStreamDecoder(model())
    assert decoder.feed(data[:cut]) == EXPECTED[:-1] and not decoder.done  # cut here: cut off
    assert decoder.feed(data[cut:]) == EXPECTED[-1:] and decoder.done


@pytest.mark.parametrize(("exception", "words"), [
    ("throttlingException", "throttled"),
    ("modelStreamErrorException", "modelStreamErrorException"),
    ("validationException", "validationException"),
])
def test_exception_frames_inside_a_200_are_errors(exception: str, words: str) -> None:
    decoder = BedrockStreamDecoder(model())
    assert decoder.feed(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})) == [
        TextDelta("Hi")]
    with pytest.raises(GatewayError) as failed:
        decoder.feed(exception_frame(exception, {"message": "Too many tokens, please wait."}))
    assert failed.value.status == 502 and failed.value.code == exception
    assert words in failed.value.message and "Too many tokens, please wait." in failed.value.message
    assert not decoder.done


def test_a_corrupt_frame_is_an_error_not_a_crash() -> None:
    frame = bytearray(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}))
    frame[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    with pytest.raises(GatewayError) as failed:
        BedrockStreamDecoder(model()).feed(bytes(frame))
    assert failed.value.status == 502 and "malformed" in failed.value.message


def test_the_frame_encoder_matches_the_spec_byte_for_byte() -> None:
    """An oracle independent of the encoder: the spec's layout for one small message."""
    frame = encode_frame({":a": "b"}, b"{}")
    # headers: 1 (name length) + 2 (":a") + 1 (type 7) + 2 (value length) + 1 ("b") = 7; total 12 + 7 + 2 + 4
    assert frame[:8] == bytes([0, 0, 0, 25, 0, 0, 0, 7])
    assert frame[12:21] == b"\x02:a\x07\x00\x01b{}"
    message = next(iter(_buffer(frame)))
    assert message.headers == {":a": "b"} and message.payload == b"{}"


def _buffer(data: bytes) -> EventStreamBuffer:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return buffer


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error_type", "client_status"), [
    (429, "ThrottlingException", 429),
    (400, "ValidationException", 400),
    (408, "ModelTimeoutException", 408),
    (429, "ModelNotReadyException", 429),
    (503, "ServiceUnavailableException", 502),
    (403, "AccessDeniedException", 502),
    (500, "InternalServerException", 502),
])
def test_bedrock_errors_are_mapped_with_their_wording(status: int, error_type: str, client_status: int) -> None:
    message = "Too many requests, please wait before trying again."
    error = BedrockProvider(model()).error(
        status, {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
        json.dumps({"message": message}).encode())
    assert error.status == client_status
    if status != 403:  # Bedrock's wording reaches the client (for 5xx after the status)
        assert message in error.message
    if client_status < 500:
        assert error.code == error_type


# -- SigV4 -----------------------------------------------------------------------------


FIXED = datetime.datetime(2025, 3, 4, 5, 6, 7)


def recompute(sent: httpx.Request, credentials: Credentials, region: str = "us-east-1") -> str:
    """The signature of what is sent, computed by botocore from the sent bytes and signed headers."""
    match = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})",
                         sent.headers["authorization"])
    assert match, sent.headers["authorization"]
    signed = {name: sent.headers[name] for name in match.group(2).split(";")}
    request = AWSRequest(method=sent.method, url=str(sent.url), data=sent.content, headers=signed)
    request.context["timestamp"] = sent.headers["x-amz-date"]
    signer = SigV4Auth(credentials, "bedrock", region)
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)


def test_requests_are_signed_over_the_exact_bytes_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FIXED)
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
    provider = BedrockProvider(model(model="us.anthropic.claude-3-5-haiku-20241022-v1:0", region="eu-west-3"),
                               credentials=credentials)
    sent = asyncio.run(provider.prepare(build(provider, ChatRequest([Message("user", [TextPart("hi")])]))))
    authorization = sent.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250304/eu-west-3/bedrock/aws4_request, ")
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token," in authorization
    assert sent.headers["x-amz-date"] == "20250304T050607Z"
    assert sent.headers["x-amz-security-token"] == "session-token"
    signature = authorization.rsplit("Signature=", 1)[1]
    assert recompute(sent, credentials, "eu-west-3") == signature
    wrong = Credentials("AKIDEXAMPLE", "another-secret", "session-token")
    assert recompute(sent, wrong, "eu-west-3") != signature
    tampered = httpx.Request(sent.method, sent.url, headers=sent.headers, content=sent.content + b" ")
    assert recompute(tampered, credentials, "eu-west-3") != signature


def test_a_bedrock_api_key_is_sent_as_a_bearer_token_unsigned() -> None:
    provider = BedrockProvider(model(api_key="ABSKbedrockapikey", api_key_env="AWS_BEARER_TOKEN_BEDROCK"))
    sent = asyncio.run(provider.prepare(build(provider, ChatRequest([Message("user", [TextPart("hi")])]))))
    assert sent.headers["authorization"] == "Bearer ABSKbedrockapikey"
    assert "x-amz-date" not in sent.headers


def test_no_credentials_is_a_clear_502(monkeypatch: pytest.MonkeyPatch) -> None:
    class Empty:
        def get_credentials(self) -> None:
            return None

    monkeypatch.setattr(botocore.session, "get_session", lambda env_vars=None: Empty())
    provider = BedrockProvider(model())
    with pytest.raises(GatewayError) as failed:
        asyncio.run(provider.prepare(build(provider, ChatRequest([Message("user", [TextPart("hi")])]))))
    assert failed.value.status == 502 and "no AWS credentials for Bedrock" in failed.value.message


# -- over real HTTP, against the mock ---------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Iterator[tuple[BedrockMock, str]]:
    app = BedrockMock(secret_key="testing")  # tests/conftest.py's AWS_SECRET_ACCESS_KEY
    server = ServerThread(app).start()
    yield app, server.url
    server.stop()


async def call(provider: BedrockProvider, request: ChatRequest, stream: bool,
               transport: str = "httpx") -> tuple[int, dict[str, str], bytes]:
    async with make_upstream_client(transport) as client:
        sent = await provider.prepare(provider.chat_request(client, request, stream))
        response = await client.send(sent)
        return response.status_code, dict(response.headers), await response.aread()


@pytest.mark.parametrize(("transport", "model_id"), [
    ("httpx", "amazon.nova-lite-v1:0"),
    ("aiohttp", PROFILE),  # the local server's transport; an ARN's "/" is escaped in the path
    ("lean", PROFILE),  # Lambda's
])
def test_round_trip_through_the_mock(transport: str, model_id: str, mock: tuple[BedrockMock, str],
                                     service: Any) -> None:
    """Signed with the standard chain's credentials (tests/conftest.py's environment), checked by the mock."""
    app, url = mock
    provider = BedrockProvider(model(base_url=url, model=model_id))
    ask = ChatRequest([Message("user", [TextPart("Weather? #mock words=3 tool=get_weather")])], tools=[WEATHER])

    status, headers, body = asyncio.run(call(provider, ask, stream=False, transport=transport))
    assert status == 200, body
    parsed = RestJSONParser().parse({"status_code": 200, "headers": headers, "body": body},
                                    service.operation_model("Converse").output_shape)
    assert parsed["stopReason"] == "tool_use"
    answer = provider.chat_response(body)
    assert answer.text == "Once upon a" and answer.finish == "tool_calls"
    assert answer.tool_calls == [ToolCall("tooluse_mock0001", "get_weather", '{"city": "Paris"}')]
    recorded = app.requests[-1]
    assert recorded["path"] == f"/model/{model_id}/converse"
    assert recorded["json"]["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    assert recorded["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")

    status, headers, body = asyncio.run(call(provider, ask, stream=True, transport=transport))
    assert status == 200 and headers["content-type"].startswith(provider.stream_media_type)
    decoder = provider.stream_decoder()
    events = [event for offset in range(0, len(body), 7) for event in decoder.feed(body[offset:offset + 7])]
    assert decoder.done
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Once upon a"
    assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == '{"city": "Paris"}'
    assert ToolCallStart(0, "tooluse_mock0001", "get_weather") in events
    assert Finish("tool_calls") in events and isinstance(events[-1], UsageReport)


def test_the_mock_fails_mid_stream_and_refuses_the_bedrock_way(mock: tuple[BedrockMock, str]) -> None:
    app, url = mock
    provider = BedrockProvider(model(base_url=url))

    status, _, body = asyncio.run(call(provider, ChatRequest([Message("user", [TextPart("#mock fail_after=3")])]),
                                       stream=True))
    assert status == 200
    decoder = provider.stream_decoder()
    with pytest.raises(GatewayError) as failed:
        decoder.feed(body)
    assert failed.value.code == "modelStreamErrorException" and not decoder.done

    status, headers, body = asyncio.run(call(provider, ChatRequest([Message("user", [TextPart("#mock status=429")])]),
                                             stream=False))
    assert status == 429 and headers["x-amzn-errortype"] == "ThrottlingException"
    error = provider.error(status, headers, body)
    assert error.status == 429 and error.headers == {"retry-after": "7"} and error.message == "mock failure 429"


def test_the_mock_refuses_a_wrong_signature(mock: tuple[BedrockMock, str]) -> None:
    _, url = mock
    provider = BedrockProvider(model(base_url=url), credentials=Credentials("testing", "not-the-secret"))
    status, headers, body = asyncio.run(call(provider, ChatRequest([Message("user", [TextPart("hi")])]), stream=False))
    assert status == 403 and headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert provider.error(status, headers, body).status == 502
