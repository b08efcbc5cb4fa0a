"""End to end with the real ``openai`` client: client → gateway → mock upstream, all over HTTP."""

from __future__ import annotations

import openai
import pytest

from conftest import CHAT, models_config

MESSAGES = CHAT["messages"]


@pytest.fixture
def gw(start_gateway):
    return start_gateway()


def client_for(gw, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gw.url + "/v1", max_retries=0, timeout=20)


def test_non_streamed_completion_has_openai_shape(gw):
    client = client_for(gw, gw.key())
    raw = client.chat.completions.with_raw_response.create(model="my-gpt4-mini", messages=MESSAGES)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content.startswith("Once upon a time")
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    body = raw.http_response.json()
    choice = body["choices"][0]
    assert choice["logprobs"] is None and "logprobs" in choice
    assert choice["message"]["refusal"] is None and "refusal" in choice["message"]
    assert float(raw.headers["x-aisix-overhead-ms"]) >= 0


def test_streamed_completion_matches_the_text_and_hides_usage_not_asked_for(gw):
    client = client_for(gw, gw.key())
    chunks = list(client.chat.completions.create(model="my-gpt4-mini", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join("Once upon a time, a brave little API gateway stood between a".split(" ")[:12])
    assert all(c.choices for c in chunks), "the usage-only chunk the gateway asked for is hidden"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streamed_usage_is_relayed_when_the_client_asks(gw):
    client = client_for(gw, gw.key())
    chunks = list(
        client.chat.completions.create(
            model="my-gpt4-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12


def test_chunks_reach_the_client_while_the_upstream_is_still_producing(start_gateway, gated_upstream):
    """The upstream sends each token only once the client has the previous one: a gateway
    that buffered would leave the upstream waiting (and noting it in ``early``)."""
    upstream = gated_upstream(words=6)
    gw = start_gateway(config=models_config(upstream.base_url))
    received: list[str] = []
    upstream.arrived = lambda i: f"w{i} " in received
    stream = client_for(gw, gw.key()).chat.completions.create(model="my-gpt4-mini", messages=MESSAGES, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
    assert received == [f"w{i} " for i in range(6)]
    assert upstream.early == [], "the upstream had to send a token before the client had the previous one"


def test_models_lists_only_what_the_key_may_use(gw):
    everything = client_for(gw, gw.key()).models.list()
    assert [m.id for m in everything.data] == ["my-gpt4-mini", "other-model"]
    only_one = client_for(gw, gw.key(models={"other-model"})).models.list().data
    assert [(m.id, m.object) for m in only_one] == [("other-model", "model")]
    assert isinstance(only_one[0].created, int)


def test_errors_map_to_the_openai_exceptions(gw):
    with pytest.raises(openai.AuthenticationError) as info:
        client_for(gw, "sk-not-a-key").chat.completions.create(model="my-gpt4-mini", messages=MESSAGES)
    assert info.value.body["code"] == "invalid_api_key"
    secret = gw.key(models={"other-model"})
    with pytest.raises(openai.PermissionDeniedError):
        client_for(gw, secret).chat.completions.create(model="my-gpt4-mini", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as info:
        client_for(gw, secret).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert info.value.body == {
        "message": "The model 'no-such-model' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_rate_limited_stream_raises_rate_limit_error(start_gateway, clock):
    gw = start_gateway(clock=clock)  # the window is the test's own: no minute turns between the calls
    client = client_for(gw, gw.key(rpm=1))
    list(client.chat.completions.create(model="my-gpt4-mini", messages=MESSAGES, stream=True))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="my-gpt4-mini", messages=MESSAGES, stream=True)
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.response.headers["retry-after"] == "55", "5 s into the minute"


def test_mid_stream_failure_raises_in_the_client_instead_of_ending_cleanly(gw):
    client = client_for(gw, gw.key())
    stream = client.chat.completions.create(
        model="my-gpt4-mini", messages=MESSAGES, stream=True, extra_body={"mock": {"fail_after": 3}}
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert "upstream" in info.value.message.lower()
    assert len(received) >= 3
