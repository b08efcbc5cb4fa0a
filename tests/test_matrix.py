"""The matrix, end to end with the official SDKs: every client dialect × every provider ×
(text, tool call, mid-stream error, 429), streamed and not.

One gateway (uvicorn on loopback, keys and counters in moto) and one loopback mock per
provider serve the whole module; each test takes a fresh key, so what it was charged is
its own. The mocks are steered with ``#mock ...`` directives in the user's text, which
survive every translation. A mid-stream error exists only for streams (a whole answer is
either whole or refused); embeddings have neither tool calls nor streams.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import anthropic
import openai
import pytest

from aisix.local.mock_upstream import STORY
from aisix.usage import estimate_prompt_tokens, estimate_tokens
from sdk_stack import EMBEDDING_PROVIDERS, PROVIDERS, TEXT, Stack, Tap, start_stack

TOOL = "get_weather"
CITY = {"city": "Paris"}
# Long enough that every mock fails after some text has gone out (Gemini sends three words an event).
MID_STREAM = "#mock words=20 fail_after=4"

STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
EVERY_PROVIDER = pytest.mark.parametrize("provider", PROVIDERS)


@pytest.fixture(scope="module")
def stack(moto_endpoint: str) -> Iterator[Stack]:
    with start_stack(moto_endpoint) as running:
        yield running


def charged_for_cut_stream(tap: Tap, relayed_text: str) -> int:
    """What a stream cut off before the upstream reported usage costs: the prompt and what was relayed."""
    return estimate_prompt_tokens(tap.sent) + estimate_tokens(len(relayed_text))


CHAT_TOOLS = [{"type": "function", "function": {
    "name": TOOL, "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
RESPONSES_TOOLS = [{"type": "function", "name": TOOL, "description": "The weather in a city.", "strict": False,
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}}]
MESSAGES_TOOLS = [{"name": TOOL, "description": "The weather in a city.",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# -- OpenAI chat completions ---------------------------------------------------------------------


@EVERY_PROVIDER
@STREAMED
def test_chat_text(stack: Stack, provider: str, stream: bool) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    if stream:
        chunks = list(client.chat.completions.create(model=provider, messages=user("Tell me a story"), stream=True,
                                                     stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and finish == ["stop"]
    else:
        completion = client.chat.completions.create(model=provider, messages=user("Tell me a story"))
        text, usage = completion.choices[0].message.content, completion.usage
        assert completion.choices[0].finish_reason == "stop"
    assert text == TEXT
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    stack.charged(secret, usage.total_tokens)


@EVERY_PROVIDER
@STREAMED
def test_chat_tool_call(stack: Stack, provider: str, stream: bool) -> None:
    client, _ = stack.openai(stack.key())
    request = dict(model=provider, messages=user(f"Weather in Paris? #mock tool={TOOL}"), tools=CHAT_TOOLS)
    if stream:  # the SDK's stream helper puts the fragments together
        with client.chat.completions.stream(**request) as events:
            completion = events.get_final_completion()
    else:
        completion = client.chat.completions.create(**request)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].id
    assert calls[0].function.name == TOOL and json.loads(calls[0].function.arguments) == CITY


@EVERY_PROVIDER
def test_chat_mid_stream_error(stack: Stack, provider: str) -> None:
    secret = stack.key()
    client, tap = stack.openai(secret)
    stream = client.chat.completions.create(model=provider, messages=user(f"A long story {MID_STREAM}"), stream=True)
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
    assert text and " ".join(STORY[:20]).startswith(text)
    assert b"[DONE]" not in tap.received and b'"finish_reason":"stop"' not in tap.received.replace(b" ", b"")
    stack.charged(secret, charged_for_cut_stream(tap, text))


@EVERY_PROVIDER
@STREAMED
def test_chat_429(stack: Stack, provider: str, stream: bool) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=provider, messages=user("Hi #mock status=429"), stream=stream)
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "7"
    stack.charged_nothing(secret)


# -- OpenAI Responses ------------------------------------------------------------------------------


@EVERY_PROVIDER
@STREAMED
def test_responses_text(stack: Stack, provider: str, stream: bool) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    if stream:
        events = list(client.responses.create(model=provider, input="Tell me a story", stream=True))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        response = events[-1].response
        assert response.output_text == text
    else:
        response = client.responses.create(model=provider, input="Tell me a story")
        text = response.output_text
    assert text == TEXT and response.status == "completed"
    usage = response.usage
    assert usage is not None and usage.total_tokens == usage.input_tokens + usage.output_tokens > 0
    stack.charged(secret, usage.total_tokens)


@EVERY_PROVIDER
@STREAMED
def test_responses_tool_call(stack: Stack, provider: str, stream: bool) -> None:
    client, _ = stack.openai(stack.key())
    request = dict(model=provider, input=f"Weather in Paris? #mock tool={TOOL}", tools=RESPONSES_TOOLS)
    if stream:  # the SDK's stream helper puts the argument deltas together
        with client.responses.stream(**request) as events:
            deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
            response = events.get_final_response()
        assert deltas and json.loads("".join(deltas)) == CITY
    else:
        response = client.responses.create(**request)
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].call_id and calls[0].status == "completed"
    assert calls[0].name == TOOL and json.loads(calls[0].arguments) == CITY


@EVERY_PROVIDER
def test_responses_mid_stream_error(stack: Stack, provider: str) -> None:
    secret = stack.key()
    client, tap = stack.openai(secret)
    events = []
    try:
        for event in client.responses.create(model=provider, input=f"A long story {MID_STREAM}", stream=True):
            events.append(event)
    except openai.APIError:
        pass  # raising is a fine way to see it too; what matters is that it never looks complete
    kinds = [e.type for e in events]
    assert "response.completed" not in kinds and b"response.completed" not in tap.received
    assert kinds[-1] in ("response.failed", "error"), kinds
    if kinds[-1] == "response.failed":
        assert events[-1].response.status == "failed" and events[-1].response.error.code == "server_error"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and " ".join(STORY[:20]).startswith(text)
    stack.charged(secret, charged_for_cut_stream(tap, text))


@EVERY_PROVIDER
@STREAMED
def test_responses_429(stack: Stack, provider: str, stream: bool) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model=provider, input="Hi #mock status=429", stream=stream)
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "7"
    stack.charged_nothing(secret)


# -- Anthropic Messages ----------------------------------------------------------------------------


@EVERY_PROVIDER
@STREAMED
def test_messages_text(stack: Stack, provider: str, stream: bool) -> None:
    secret = stack.key()
    client, tap = stack.anthropic(secret)
    request = dict(model=provider, max_tokens=256, messages=user("Tell me a story"))
    if stream:
        with client.messages.stream(**request) as events:
            streamed = "".join(events.text_stream)
            message = events.get_final_message()
        assert streamed == TEXT
        assert b"event: message_stop" in tap.received and b"event: ping" in tap.received
    else:
        message = client.messages.create(**request)
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == TEXT
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    usage = message.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    stack.charged(secret, usage.input_tokens + usage.output_tokens)


@EVERY_PROVIDER
@STREAMED
def test_messages_tool_call(stack: Stack, provider: str, stream: bool) -> None:
    client, _ = stack.anthropic(stack.key())
    request = dict(model=provider, max_tokens=256, messages=user(f"Weather in Paris? #mock tool={TOOL}"),
                   tools=MESSAGES_TOOLS)
    if stream:  # the SDK's stream helper puts the input_json_delta fragments together
        with client.messages.stream(**request) as events:
            fragments = [e.delta.partial_json for e in events
                         if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
            message = events.get_final_message()
        assert json.loads("".join(fragments)) == CITY
    else:
        message = client.messages.create(**request)
    calls = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert len(calls) == 1 and calls[0].id and calls[0].name == TOOL and calls[0].input == CITY


@EVERY_PROVIDER
def test_messages_mid_stream_error(stack: Stack, provider: str) -> None:
    secret = stack.key()
    client, tap = stack.anthropic(secret)
    text = ""
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=provider, max_tokens=256, messages=user(f"A long story {MID_STREAM}")) as s:
            for piece in s.text_stream:
                text += piece
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] in ("overloaded_error", "api_error")
    assert b"message_stop" not in tap.received and b"event: error" in tap.received
    assert text and " ".join(STORY[:20]).startswith(text)
    stack.charged(secret, charged_for_cut_stream(tap, text))


@EVERY_PROVIDER
@STREAMED
def test_messages_429(stack: Stack, provider: str, stream: bool) -> None:
    secret = stack.key()
    client, _ = stack.anthropic(secret)
    request = dict(model=provider, max_tokens=256, messages=user("Hi #mock status=429"))
    with pytest.raises(anthropic.RateLimitError) as info:
        if stream:
            with client.messages.stream(**request) as events:
                events.get_final_message()
        else:
            client.messages.create(**request)
    assert info.value.status_code == 429 and info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert info.value.response.headers.get("retry-after") == "7"
    stack.charged_nothing(secret)


# -- OpenAI embeddings -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", EMBEDDING_PROVIDERS)
@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_embeddings(stack: Stack, provider: str, encoding: str) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    # base64 is what the SDK asks for when not told (and decodes); float when asked.
    extra = {} if encoding == "base64" else {"encoding_format": "float"}
    answer = client.embeddings.create(model=provider, input=["first text", "second text"], dimensions=4, **extra)
    assert [item.index for item in answer.data] == [0, 1]
    assert all(len(item.embedding) == 4 and all(isinstance(x, float) for x in item.embedding) for item in answer.data)
    assert answer.data[0].embedding != answer.data[1].embedding
    assert answer.usage.total_tokens > 0
    stack.charged(secret, answer.usage.total_tokens)


@pytest.mark.parametrize("provider", EMBEDDING_PROVIDERS)
def test_embeddings_429(stack: Stack, provider: str) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model=provider, input="text #mock status=429")
    assert info.value.status_code == 429 and info.value.response.headers.get("retry-after") == "7"
    stack.charged_nothing(secret)


@pytest.mark.parametrize("provider", sorted(set(PROVIDERS) - set(EMBEDDING_PROVIDERS)))
def test_embeddings_on_a_chat_only_model_is_a_clear_400(stack: Stack, provider: str) -> None:
    secret = stack.key()
    client, _ = stack.openai(secret)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=provider, input="text")
    assert info.value.status_code == 400 and info.value.code == "unsupported_model"
    assert provider in info.value.message and "embeddings" in info.value.message
    stack.charged_nothing(secret)
