"""The OpenAI chat dialect on the translated path: requests into the neutral model, answers and streams back.

Everything the dialect writes is checked with the ``openai`` SDK's own types
(and its stream accumulator), so a strict OpenAI client accepts it.
"""

from __future__ import annotations

import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.datastructures import Headers

from aisix.call import Call, TokenUsage
from aisix.dialects import load
from aisix.dialects.openai_chat import IGNORED_FIELDS, OpenAIChatDialect
from aisix.errors import GatewayError
from aisix.translate.neutral import (
    ChatResponse,
    Finish,
    ImagePart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
)

dialect = OpenAIChatDialect()
USAGE = TokenUsage(prompt_tokens=120, completion_tokens=30, total_tokens=150, cached_tokens=100, reasoning_tokens=8)
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def call_for(body: dict, stream: bool = False) -> Call:
    return Call(key=None, model_name=body.get("model", "claude"), body=body, stream=stream, dialect="openai_chat")


def refused(body: dict) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        dialect.validate(body)
        dialect.to_chat(body)
    assert info.value.status == 400
    return info.value


# -- request --------------------------------------------------------------------


def test_credentials_are_the_bearer_token() -> None:
    assert dialect.credentials(Headers({"authorization": "Bearer sk-aisix-abc"})) == "sk-aisix-abc"
    with pytest.raises(GatewayError) as info:
        dialect.credentials(Headers({"x-api-key": "sk-aisix-abc"}))
    assert info.value.status == 401 and info.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "You must provide a model parameter (a string).", "model"),
        ({"model": "m", "messages": []}, "'messages' must be a non-empty array of messages.", "messages"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0] must be an object with a 'role'.",
         "messages.[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
         "'stream' must be a boolean.", "stream"),
    ],
)  # fmt: skip
def test_validate_keeps_the_pass_through_wording(body: dict, message: str, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        dialect.validate(body)
    assert (info.value.status, info.value.message, info.value.param) == (400, message, param)


def test_validate_returns_model_and_stream() -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert dialect.validate(body) == ("claude", True)
    assert dialect.validate({**body, "stream": None}) == ("claude", False)


def test_a_conversation_with_tools_maps_to_neutral() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in these two places?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks."},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 50,
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "reasoning_effort": "low",
        "stream": True,
    }  # fmt: skip
    request = dialect.to_chat(body)
    assert request.system == "Be brief.\n\nUse metric units."
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    user = request.messages[0].parts
    assert user[0] == TextPart("Weather in these two places?")
    assert user[1] == ImagePart(media_type="image/png", data=PIXEL)
    assert user[2] == ImagePart(url="https://example.com/map.jpg")
    assert request.messages[1].parts == [
        TextPart("Checking."),
        ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
        ToolCall("call_2", "get_time", "{}"),
    ]
    # Both tool results and the next user words are one user turn; results know their tool's name.
    assert request.messages[2].parts == [
        ToolResult("call_1", "18C", name="get_weather"),
        ToolResult("call_2", "noon", name="get_time"),
        TextPart("Thanks."),
    ]
    assert [t.name for t in request.tools] == ["get_weather", "get_time"]
    assert request.tools[1].parameters == {"type": "object", "properties": {}}
    assert (request.tool_choice, request.tool_choice_name) == ("required", "get_weather")
    assert request.max_tokens == 300  # max_completion_tokens wins over the legacy max_tokens
    assert (request.temperature, request.top_p, request.stop) == (0.2, 0.9, ["END"])
    assert request.reasoning_effort == "low" and request.stream is True


def test_harmless_fields_are_ignored() -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"},
            "n": 1, "logprobs": False}  # fmt: skip
    body.update({name: None for name in IGNORED_FIELDS})
    body.update(seed=7, user="u1", parallel_tool_calls=False, stream_options={"include_usage": True})
    request = dialect.to_chat(body)
    assert request.messages[0].parts == [TextPart("hi")]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
         "response_format.type=json_schema"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type=custom"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice=allowed_tools"),
    ],
)  # fmt: skip
def test_what_cannot_be_carried_is_a_400_naming_it(extra: dict, param: str) -> None:
    error = refused({"model": "claude", "messages": [{"role": "user", "content": "hi"}], **extra})
    assert error.param == param and error.code == "unsupported_parameter"
    assert param in error.message


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]},
         "messages[0].content[0].type=input_audio"),
        ({"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}, "messages[0].content[0].type=file"),
        ({"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
         "messages[0].function_call"),
        ({"role": "function", "name": "f", "content": "x"}, "messages[0].role=function"),
    ],
)  # fmt: skip
def test_message_parts_that_cannot_be_carried_are_refused(message: dict, param: str) -> None:
    assert refused({"model": "claude", "messages": [message]}).param == param


def test_a_non_base64_data_url_is_refused() -> None:
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}
    assert refused({"model": "claude", "messages": [message]}).param == "messages[0].content[0].image_url.url"


# -- complete answers -------------------------------------------------------------


def test_a_text_answer_is_a_valid_chat_completion() -> None:
    body = dialect.chat_answer(ChatResponse([TextPart("Hello there.")], "stop", USAGE), call_for({"model": "claude"}))
    completion = ChatCompletion.model_validate(body)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == "claude"  # the client's alias, never the upstream's model id
    assert completion.choices[0].message.content == "Hello there."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 120 and completion.usage.total_tokens == 150
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    assert completion.usage.completion_tokens_details.reasoning_tokens == 8
    for key in ("id", "object", "created", "model", "choices", "usage", "system_fingerprint"):
        assert key in body
    assert set(body["choices"][0]) == {"index", "message", "logprobs", "finish_reason"}


def test_an_answer_with_only_tool_calls_has_null_content() -> None:
    answer = ChatResponse([ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), ToolCall("toolu_2", "now", "")],
                          "tool_calls", None)  # fmt: skip
    body = dialect.chat_answer(answer, call_for({"model": "claude"}))
    completion = ChatCompletion.model_validate(body)
    message = completion.choices[0].message
    assert message.content is None and body["choices"][0]["message"]["content"] is None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_1", "get_weather", '{"city": "Paris"}'),
        ("toolu_2", "now", "{}"),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert "usage" not in body  # not known: not invented


# -- streams ---------------------------------------------------------------------


EVENTS = [
    TextDelta("Let me "),
    TextDelta("check the weather."),
    ToolCallStart(0, "toolu_01", "get_weather"),
    ToolCallDelta(0, '{"ci'),
    ToolCallDelta(0, 'ty": "Pa'),
    ToolCallDelta(0, 'ris"}'),
    ToolCallStart(1, "toolu_02", "get_time"),
    UsageReport(TokenUsage(120, 10, 130)),
    Finish("tool_calls"),
    UsageReport(USAGE),  # cumulative: the last one wins
]


def run_stream(body: dict, events: list) -> list[bytes]:
    encoder = dialect.stream_encoder(call_for(body, stream=True))
    frames = [encoder.start()] + [encoder.encode(e) for e in events] + [encoder.end()]
    out = b"".join(frames)
    assert out.endswith(b"data: [DONE]\n\n")
    return [f + b"\n\n" for f in out.split(b"\n\n") if f]


def chunks_of(frames: list[bytes]) -> list[ChatCompletionChunk]:
    assert frames[-1] == b"data: [DONE]\n\n"
    chunks = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        chunks.append(ChatCompletionChunk.model_validate(json.loads(frame[6:])))
    return chunks


def test_a_stream_is_valid_chunks_that_reassemble_to_the_answer() -> None:
    body = {"model": "claude", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    chunks = chunks_of(run_stream(body, EVENTS))
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1 and chunks[0].model == "claude"
    assert chunks[0].choices[0].delta.role == "assistant"
    # The SDK's own accumulator (what `client.chat.completions.stream` uses) rebuilds the answer.
    state = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(chunk))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me check the weather."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_01", "get_weather", '{"city": "Paris"}'),
        ("toolu_02", "get_time", "{}"),  # no argument fragments: still a JSON object
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    # Usage comes once, after the finish, in a chunk with no choices.
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 150
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 100
    assert all(c.usage is None for c in chunks[:-1])


def test_without_include_usage_there_is_no_usage_chunk() -> None:
    chunks = chunks_of(run_stream({"model": "claude", "stream": True}, EVENTS))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert b'"usage"' not in b"".join(run_stream({"model": "claude"}, EVENTS))


def test_a_stream_without_a_stop_reason_still_finishes() -> None:
    chunks = chunks_of(run_stream({"model": "claude"}, [TextDelta("Hi")]))
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "stop"]


def test_the_registry_loads_this_dialect() -> None:
    assert isinstance(load("openai_chat"), OpenAIChatDialect)
