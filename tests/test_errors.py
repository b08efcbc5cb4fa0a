"""Bad input and upstream refusals: OpenAI's error shape, the right status, no secrets."""

from __future__ import annotations

import pytest

from conftest import CHAT, free_port, models_config


@pytest.fixture
def gw(start_gateway, clock):
    return start_gateway(max_body_bytes=2048, clock=clock)  # key cache: 0.5 s of the fake clock


def assert_openai_error(response, status: int, code=None, param=None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"] == code
    assert error["param"] == param
    return error


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer"}, {"authorization": "Basic abc"}, {"authorization": "Bearer sk-wrong"}],
)
def test_missing_or_unknown_key_is_401(gw, headers):
    import httpx

    response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=headers)
    assert_openai_error(response, 401, code="invalid_api_key")


def test_revoked_key_is_refused_within_the_cache_time(gw, clock):
    secret = gw.key()
    with gw.client(secret) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert gw.store.set_enabled(gw.key_id(secret), enabled=False)
        clock.advance(0.4)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200, "cached for 0.5 s"
        clock.advance(0.2)  # past the cache time
        error = assert_openai_error(client.post("/v1/chat/completions", json=CHAT), 401, code="invalid_api_key")
        assert "revoked" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        (b"", None, 400),
        (b"{not json", None, 400),
        (b"\xff\xfe\x00garbage", None, 400),
        (b"[1, 2]", None, 400),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", 400),
        (b'{"model": 5, "messages": [{"role": "user", "content": "hi"}]}', "model", 400),
        (b'{"model": "my-gpt4-mini"}', "messages", 400),
        (b'{"model": "my-gpt4-mini", "messages": []}', "messages", 400),
        (b'{"model": "my-gpt4-mini", "messages": ["hi"]}', "messages.[0]", 400),
        (b'{"model": "my-gpt4-mini", "messages": [{"role": "user"}], "stream": "yes"}', "stream", 400),
    ],
)
def test_malformed_requests_are_400_with_the_param(gw, body, param, status):
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, status, param=param)


def test_body_over_the_limit_is_413(gw):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    with gw.client(gw.key()) as client:
        assert_openai_error(client.post("/v1/chat/completions", json=big), 413, code="request_too_large")

        def chunked():
            yield b'{"model": "my-gpt4-mini", "messages": [{"role": "user", "content": "'
            yield b"y" * 4096
            yield b'"}]}'

        assert_openai_error(client.post("/v1/chat/completions", content=chunked()), 413, code="request_too_large")


def test_wrong_content_type_is_415(gw):
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert_openai_error(response, 415)


def test_unknown_route_and_method_have_openai_errors(gw):
    with gw.client(gw.key()) as client:
        assert_openai_error(client.get("/v1/nothing-here"), 404)
        assert_openai_error(client.get("/v1/chat/completions"), 405)


def test_health_needs_no_key(gw):
    import httpx

    assert httpx.get(gw.url + "/health").json() == {"status": "ok"}


def test_upstream_4xx_passes_through_with_status_and_fields(gw):
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "mock": {"status": 422, "message": "bad temp"}})
    error = assert_openai_error(response, 422, code="mock")
    assert error["message"] == "bad temp"
    assert error["type"] == "mock_error"


def test_upstream_429_keeps_retry_after(gw):
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True, "mock": {"status": 429}})
    assert_openai_error(response, 429, code="mock")
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [500, 503])
def test_upstream_5xx_is_502(gw, status):
    with gw.client(gw.key()) as client:
        error = assert_openai_error(
            client.post("/v1/chat/completions", json={**CHAT, "mock": {"status": status}}), 502, code="upstream_error"
        )
    assert str(status) in error["message"]


def test_upstream_refusing_the_gateway_key_is_502_and_never_shows_it(gw):
    with gw.client(gw.key()) as client:
        response = client.post(
            "/v1/chat/completions",
            json={**CHAT, "mock": {"status": 401, "message": "Incorrect API key sk-upstream-secret-do-not-leak"}},
        )
    assert_openai_error(response, 502, code="upstream_error")
    assert "sk-upstream-secret" not in response.text


def test_upstream_unreachable_is_502_and_slow_upstream_is_504(start_gateway):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(config=models_config(dead))
    with gw.client(gw.key()) as client:
        assert_openai_error(client.post("/v1/chat/completions", json=CHAT), 502, code="upstream_error")
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert_openai_error(streamed, 502, code="upstream_error")


def test_upstream_timeout_before_the_first_byte_is_504(start_gateway, upstream):
    config = models_config(upstream.base_url)
    config["models"][0]["timeout"] = 0.5
    gw = start_gateway(config=config)
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "mock": {"first_byte_delay": 1.5}})
    assert_openai_error(response, 504, code="upstream_timeout")


def test_client_authorization_never_reaches_the_upstream(gw, upstream):
    secret = gw.key()
    with gw.client(secret) as client:
        client.post("/v1/chat/completions", json={**CHAT, "marker": "auth-check"})
    sent = [r for r in upstream.requests() if r["body"].get("marker") == "auth-check"][-1]
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret-do-not-leak"
    assert secret not in str(sent)
    assert sent["body"]["model"] == "gpt-4o-mini", "the alias is replaced by the upstream model name"
