"""Azure OpenAI: OpenAI's wire format behind deployment or v1 URLs and the ``api-key`` header."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aisix.config import ModelConfig, parse_config
from aisix.errors import GatewayError
from aisix.local.mocks.azure import AzureOpenAIMock
from aisix.providers import provider_class
from aisix.providers.azure import AzureOpenAIProvider
from aisix.translate.neutral import (
    ChatRequest,
    EmbeddingsRequest,
    Finish,
    Message,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from tests.conftest import ServerThread

WEATHER = Tool("get_weather", None, {"type": "object", "properties": {"city": {"type": "string"}}})


def azure(base_url: str = "https://res.openai.azure.com", api_version: str | None = "2024-10-21",
          model: str = "my-deployment") -> AzureOpenAIProvider:
    return AzureOpenAIProvider(ModelConfig(name="gpt-azure", provider="azure", model=model, base_url=base_url,
                                           timeout=5, api_key="azure-secret", api_version=api_version))


def ask(text: str, **extra: Any) -> ChatRequest:
    return ChatRequest([Message("user", [TextPart(text)])], **extra)


def test_the_models_file_names_the_azure_provider() -> None:
    config = parse_config({"models": [{"name": "gpt-azure", "provider": "azure", "model": "my-deployment",
                                       "base_url": "https://res.openai.azure.com", "api_version": "2024-10-21",
                                       "api_key_env": "AZ"}]}, {"AZ": "k"})
    p = provider_class("azure")(config.models["gpt-azure"])
    assert isinstance(p, AzureOpenAIProvider) and p.kind == "azure"
    assert p.native_dialects == {"openai_chat", "openai_embeddings"} and p.serves == {"chat", "embeddings"}


def test_deployment_urls_carry_the_api_version_and_the_key_goes_in_api_key() -> None:
    p = azure()
    built = p.chat_request(httpx.AsyncClient(), ask("hi", max_tokens=5), stream=False)
    assert str(built.url) == ("https://res.openai.azure.com/openai/deployments/my-deployment/chat/completions"
                              "?api-version=2024-10-21")
    assert built.headers["api-key"] == "azure-secret" and "authorization" not in built.headers
    # 2024-10-21 (GA) knows max_tokens only; its spec has no max_completion_tokens.
    assert json.loads(built.content)["max_tokens"] == 5
    embeddings = p.embeddings_request(httpx.AsyncClient(), EmbeddingsRequest(["a"]))
    assert str(embeddings.url) == ("https://res.openai.azure.com/openai/deployments/my-deployment/embeddings"
                                   "?api-version=2024-10-21")


@pytest.mark.parametrize("version", [None, "v1"])
def test_the_v1_api_has_no_deployment_in_the_url_and_the_model_in_the_body(version: Any) -> None:
    p = azure("https://res.openai.azure.com/openai/v1/", version)  # a base_url with the path is forgiven
    built = p.chat_request(httpx.AsyncClient(), ask("hi", max_tokens=5), stream=True)
    assert str(built.url) == "https://res.openai.azure.com/openai/v1/chat/completions"
    body = json.loads(built.content)
    assert body["model"] == "my-deployment" and body["max_completion_tokens"] == 5 and body["stream"] is True
    assert p.embeddings_url == "https://res.openai.azure.com/openai/v1/embeddings"


def test_the_raw_pass_through_uses_azures_url_and_header() -> None:
    p = azure()
    built = p.build_request(httpx.AsyncClient(), {"model": "gpt-azure", "messages": []}, stream=False,
                            with_usage=False)
    assert str(built.url) == p.url and built.headers["api-key"] == "azure-secret"
    raw = p.build_embeddings_request(httpx.AsyncClient(), {"model": "gpt-azure", "input": "x"})
    assert str(raw.url) == p.embeddings_url and json.loads(raw.content)["model"] == "my-deployment"


def test_azure_errors_keep_their_code_and_wording() -> None:
    filtered = json.dumps({"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                   "policy.", "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation"}}}).encode()
    error = azure().error(400, {}, filtered)
    assert (error.status, error.code, error.param) == (400, "content_filter", "prompt")
    assert error.message.startswith("The response was filtered")
    limited = azure().error(429, {"retry-after": "7"}, b'{"error": {"code": "429", "message": "Requests to the '
                                                       b'ChatCompletions_Create Operation have exceeded call rate '
                                                       b'limit."}}')
    assert (limited.status, limited.type, limited.headers) == (429, "rate_limit_error", {"retry-after": "7"})
    assert azure().error(401, {}, b'{"error": {"code": "401", "message": "Access denied"}}').status == 502


def test_a_filtered_answer_ends_with_content_filter_and_filter_results_ride_along() -> None:
    stream = (
        b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
        b'[{"prompt_index":0,"content_filter_results":{}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null,'
        b'"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"id":"c","object":'
        b'"chat.completion.chunk","created":1,"model":"gpt-4o"}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"content_filter","content_filter_results":'
        b'{"violence":{"filtered":true,"severity":"high"}}}],"id":"c","object":"chat.completion.chunk",'
        b'"created":1,"model":"gpt-4o"}\n\ndata: [DONE]\n\n'
    )
    decoder = azure().stream_decoder()
    assert decoder.feed(stream) == [TextDelta("Hi"), Finish("content_filter")] and decoder.done


# -- loopback, against the mock --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Any:
    app = AzureOpenAIMock(api_key="azure-secret")
    server = ServerThread(app).start()
    yield app, server.url
    server.stop()


async def exchange(request: httpx.Request) -> tuple[int, dict[str, str], bytes]:
    async with httpx.AsyncClient() as client:
        response = await client.send(request, stream=True)
        return response.status_code, dict(response.headers), await response.aread()


def chat(p: AzureOpenAIProvider, request: ChatRequest, stream: bool) -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(exchange(p.chat_request(httpx.AsyncClient(), request, stream)))


@pytest.mark.parametrize("version", ["2024-10-21", "v1"])
def test_round_trip_through_the_mock(mock: tuple[AzureOpenAIMock, str], version: str) -> None:
    app, url = mock
    p = azure(url, version)
    status, _, body = chat(p, ask("Weather? #mock tool=get_weather", tools=[WEATHER]), stream=True)
    assert status == 200
    payloads = [line[6:] for line in body.decode().split("\n") if line.startswith("data: {")]
    for payload in payloads[1:]:  # the first is Azure's prompt-filter chunk, not an OpenAI chunk
        ChatCompletionChunk.model_validate_json(payload)
    decoder = p.stream_decoder()
    events = decoder.feed(body)
    assert decoder.done and events[0] == ToolCallStart(0, events[0].id, "get_weather")  # type: ignore[union-attr]
    assert json.loads("".join(e.arguments for e in events if isinstance(e, ToolCallDelta))) == {"city": "Paris"}
    assert Finish("tool_calls") in events and any(isinstance(e, UsageReport) for e in events)
    sent = app.requests[-1]
    assert sent["headers"]["api-key"] == "azure-secret"
    assert sent["json"]["stream_options"] == {"include_usage": True}

    status, _, body = chat(p, ask("Hi #mock words=4"), stream=False)
    ChatCompletion.model_validate_json(body)
    answer = p.chat_response(body)
    assert (status, answer.text, answer.finish) == (200, "Once upon a time,", "stop")

    embeddings = asyncio.run(exchange(p.embeddings_request(httpx.AsyncClient(), EmbeddingsRequest(["a", "b"], 4))))
    vectors = p.embeddings_response(embeddings[2])
    assert embeddings[0] == 200 and [len(v) for v in vectors.vectors] == [4, 4] and vectors.usage is not None


def test_the_mock_refuses_the_azure_way(mock: tuple[AzureOpenAIMock, str]) -> None:
    _, url = mock
    p = azure(url)
    status, headers, body = chat(p, ask("Hi #mock status=429"), stream=False)
    error = p.error(status, headers, body)
    assert (error.status, error.headers) == (429, {"retry-after": "7"})
    status, headers, body = chat(p, ask("Hi #mock filter=prompt"), stream=False)
    assert p.error(status, headers, body).code == "content_filter"
    status, _, body = chat(p, ask("Hi #mock filter=output"), stream=False)
    assert p.chat_response(body).finish == "content_filter"
    status, _, body = chat(p, ask("Hi #mock fail_after=3"), stream=True)
    decoder = p.stream_decoder()
    with pytest.raises(GatewayError) as caught:
        decoder.feed(body)
    assert caught.value.status == 502 and "server had an error" in caught.value.message
    # A deployment URL without api-version is Azure's 404; a wrong key its 401.
    no_version = AzureOpenAIProvider(ModelConfig(name="x", provider="azure", model="d", base_url=url, timeout=5,
                                                 api_key="azure-secret", api_version="2024-10-21"))
    bare = httpx.AsyncClient().build_request("POST", no_version.url.split("?")[0], json={"messages": []},
                                             headers={"api-key": "azure-secret"})
    assert asyncio.run(exchange(bare))[0] == 404
    wrong = AzureOpenAIProvider(ModelConfig(name="x", provider="azure", model="d", base_url=url, timeout=5,
                                            api_key="wrong", api_version="v1"))
    assert chat(wrong, ask("hi"), stream=False)[0] == 401
