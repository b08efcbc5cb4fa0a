"""What the official SDKs do besides chatting, end to end: model lookups (``openai``), token
counting and a Claude Code-like beta request (``anthropic``), and an agent run (``openai-agents``).

The same stack as the matrix (`sdk_stack.start_stack`): one gateway, one mock per provider.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Iterator

import openai
import pytest

from aisix.providers.base import json_body
from sdk_stack import ENV, PROVIDERS, TEXT, Stack, start_stack

BETA = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"


@pytest.fixture(scope="module")
def stack(moto_endpoint: str) -> Iterator[Stack]:
    with start_stack(moto_endpoint) as running:
        yield running


# -- openai: models ----------------------------------------------------------------------------------


def test_models_retrieve_and_list(stack: Stack) -> None:
    client, _ = stack.openai(stack.key())
    model = client.models.retrieve("bedrock")
    assert (model.id, model.object) == ("bedrock", "model") and isinstance(model.created, int)
    assert sorted(m.id for m in client.models.list().data) == sorted(PROVIDERS)
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_a_key_sees_only_its_models(stack: Stack) -> None:
    client, _ = stack.openai(stack.key(models={"gemini", "anthropic"}))
    assert sorted(m.id for m in client.models.list().data) == ["anthropic", "gemini"]
    assert client.models.retrieve("gemini").id == "gemini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openai")


# -- anthropic: count_tokens ---------------------------------------------------------------------------


COUNT = dict(messages=[{"role": "user", "content": "How many tokens is this sentence, roughly?"}],
             system="You count tokens.")


def test_count_tokens_is_the_providers_own_count_where_it_has_one(stack: Stack) -> None:
    secret = stack.key()
    client, _ = stack.anthropic(secret)
    mock = stack.mocks["anthropic"]
    before = len(mock.requests)
    counted = client.messages.count_tokens(model="anthropic", **COUNT)
    asked = [r for r in mock.requests[before:] if r["path"] == "/v1/messages/count_tokens"]
    assert len(asked) == 1
    assert counted.input_tokens == len(json_body(asked[0]["json"])) // 4 + 1, "the mock's count, as it answered"
    assert asked[0]["json"]["model"] == "claude-sonnet-4-5" and asked[0]["headers"]["x-api-key"] == ENV[
        "MATRIX_ANTHROPIC_KEY"]
    stack.charged_nothing(secret)  # free, as Anthropic's is


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
def test_count_tokens_is_the_estimate_for_a_provider_without_a_count(stack: Stack, provider: str) -> None:
    client, _ = stack.anthropic(stack.key())
    before = {name: len(mock.requests) for name, mock in stack.mocks.items()}
    counted = client.messages.count_tokens(model=provider, **COUNT)
    assert isinstance(counted.input_tokens, int) and counted.input_tokens > 0
    assert {name: len(mock.requests) for name, mock in stack.mocks.items()} == before, "no upstream call"


def test_count_tokens_on_gemini_asks_gemini(stack: Stack) -> None:
    client, _ = stack.anthropic(stack.key())
    mock = stack.mocks["gemini"]
    before = len(mock.requests)
    counted = client.messages.count_tokens(model="gemini", **COUNT)
    asked = [r for r in mock.requests[before:] if r["path"].endswith(":countTokens")]
    assert len(asked) == 1 and counted.input_tokens > 0


# -- anthropic: a Claude Code-like request -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_claude_code_like_beta_request_passes_through(stack: Stack, stream: bool) -> None:
    """``?beta=true``, ``anthropic-beta`` and the key as ``x-api-key``, as Claude Code sends them: the
    upstream gets the query and the beta header untouched, and the gateway's own key. (This SDK's beta
    client keeps ``beta=true`` as a request option instead of in the URL, so the query is added here.)"""
    secret = stack.key()
    client, tap = stack.anthropic(secret)
    mock = stack.mocks["anthropic"]
    before = len(mock.requests)
    request: dict[str, Any] = dict(model="anthropic", max_tokens=1024, betas=BETA.split(","),
                                   system=[{"type": "text", "text": "You are Claude Code."}],
                                   messages=[{"role": "user", "content": "Say something."}],
                                   metadata={"user_id": "user_abc_account_def_session_ghi"},
                                   extra_query={"beta": "true"})
    if stream:
        with client.beta.messages.stream(**request) as events:
            text = "".join(events.text_stream)
            message = events.get_final_message()
    else:
        message = client.beta.messages.create(**request)
        text = message.content[0].text
    assert text == TEXT and message.usage.input_tokens > 0
    sent = mock.requests[before:]
    assert len(sent) == 1 and sent[0]["path"] == "/v1/messages" and sent[0]["query"] == "beta=true"
    headers = sent[0]["headers"]
    assert headers["anthropic-beta"] == BETA
    assert headers["x-api-key"] == ENV["MATRIX_ANTHROPIC_KEY"] and secret not in json.dumps(headers)
    assert sent[0]["json"]["metadata"] == request["metadata"] and sent[0]["json"]["model"] == "claude-sonnet-4-5"
    stack.charged(secret, message.usage.input_tokens + message.usage.output_tokens)


# -- openai-agents: an agent with a function tool -------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_an_agents_sdk_run_calls_the_tool_and_answers(stack: Stack, provider: str) -> None:
    """The Agents SDK on the Responses endpoint, translated to another provider: the model asks for the
    tool, the SDK runs it and sends its output back, and the model's next answer is the final output.

    The mock calls the tool when told (``#mock tool=...`` in the request) and answers a conversation
    that ends with the tool's output by quoting it, so the final output shows the output went round."""
    import agents  # openai-agents (requirements-dev.txt); imported here: it takes a while
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}."

    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(api_key=stack.key(), base_url=stack.url + "/v1", max_retries=0, timeout=20)
    agent = agents.Agent(name="weather", instructions="You report the weather. #mock tool=get_weather", tools=[get_weather],
                         model=agents.OpenAIResponsesModel(provider, client))

    async def run() -> Any:
        try:
            return await agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4)
        finally:
            await client.close()

    result = asyncio.run(run())
    assert calls == ["Paris"]
    assert result.final_output == "Tool result: Sunny in Paris."
    outputs = [item for item in result.new_items if item.type == "tool_call_output_item"]
    assert len(outputs) == 1 and outputs[0].output == "Sunny in Paris."
    # The tool's output went back to the upstream in the provider's own shape, tied to the call.
    last = stack.mocks[provider].requests[-1]["json"]
    assert "Sunny in Paris." in json.dumps(last)
