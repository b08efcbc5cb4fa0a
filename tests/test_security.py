"""Secrets stay where they belong: keys compared in constant time, allow-lists hold, nothing of
the client's reaches the upstream but the body, nothing of the upstream's reaches the client but
the answer, and no key appears in any log line or error message.

Already covered elsewhere (docs/faults.md lists them): keys stored only as hashes
(test_keys.py), revoked keys refused within the cache time (test_errors.py), casing and
upstream-name bypasses (test_hooks.py), the client key not forwarded (test_errors.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

import httpx
import pytest

from aisix import auth
from aisix.auth import KeyCache, hash_key, issue_key
from aisix.errors import GatewayError
from aisix.hooks import Hook
from conftest import CHAT, eventually, sse_events

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak"


def test_presented_keys_are_compared_with_the_stored_hash_in_constant_time(store, monkeypatch):
    secret, record = issue_key(store, "team")
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)

    async def lookup(key_hash):
        return record  # a store that answers with the wrong record must still not let a key in

    cache = KeyCache(lookup, ttl=60)

    async def scenario():
        assert await cache.authenticate(secret) == record
        assert await cache.authenticate(secret) == record  # a cached answer is compared too
        with pytest.raises(GatewayError) as info:
            await cache.authenticate(secret + "x")
        assert info.value.status == 401

    asyncio.run(scenario())
    assert compared[:2] == [(record.key_hash, hash_key(secret))] * 2
    assert len(compared) == 3


def test_allow_list_holds_on_every_route_and_listing(start_gateway, upstream):
    gw = start_gateway()
    secret = gw.key(models={"other-model"})
    with gw.client(secret) as client:
        for path in ("/v1/models", "/models"):
            assert [m["id"] for m in client.get(path).json()["data"]] == ["other-model"]
        for path in ("/v1/chat/completions", "/chat/completions"):
            for alias in ("my-gpt4-mini", "my-gpt4-mini\u200b", "ｍｙ-gpt4-mini", "my-gpt4-mini/", "other-model "):
                body = {**CHAT, "model": alias, "stream": True, "marker": "allow-list"}
                assert client.post(path, json=body).status_code in (403, 404), (path, alias)
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "other-model"}).status_code == 200
    assert not [r for r in upstream.requests() if r["body"].get("marker") == "allow-list"], "nothing went upstream"


def test_no_client_header_reaches_the_upstream(start_gateway, upstream):
    """Only the body travels: hop-by-hop headers, cookies, proxies' credentials, the client key."""
    gw = start_gateway()
    secret = gw.key()
    sent_headers = {
        "connection": "keep-alive, x-hop", "x-hop": "hop-value", "keep-alive": "timeout=99",
        "te": "trailers", "trailer": "x-trailer-name", "proxy-authorization": "Basic cHJveHktc2VjcmV0",
        "cookie": "session=cookie-value", "x-api-key": secret, "x-forwarded-for": "203.0.113.77",
        "openai-organization": "org-client",
    }
    with gw.client(secret) as client:
        for stream in (False, True):
            body = {**CHAT, "stream": stream, "marker": f"headers-{stream}"}
            assert client.post("/v1/chat/completions", json=body, headers=sent_headers).status_code == 200
    for stream in (False, True):
        sent = [r for r in upstream.requests() if r["body"].get("marker") == f"headers-{stream}"][-1]
        assert set(sent["headers"]) <= {"host", "content-type", "accept", "authorization", "content-length",
                                        "user-agent", "accept-encoding", "connection"}, sent["headers"]
        assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert sent["headers"].get("connection", "keep-alive") == "keep-alive"
        dump = json.dumps(sent)
        for value in ("hop-value", "timeout=99", "x-trailer-name", "cHJveHktc2VjcmV0", "cookie-value", secret,
                      "203.0.113.77", "org-client"):
            assert value not in dump, value


UPSTREAM_HEADERS = {
    "connection": "x-mock-hop", "x-mock-hop": "1", "keep-alive": "timeout=99", "proxy-authenticate": "Basic",
    "set-cookie": "upstream=1", "x-upstream-key": UPSTREAM_KEY, "openai-organization": "org-upstream",
}


@pytest.mark.parametrize(
    "mock",
    [{}, {"status": 429}, {"status": 400, "message": f"bad request for key {UPSTREAM_KEY}"}],
    ids=["answer", "429", "400"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_no_upstream_header_or_key_reaches_the_client(start_gateway, stream, mock):
    gw = start_gateway()
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions",
                               json={**CHAT, "stream": stream, "mock": {**mock, "headers": UPSTREAM_HEADERS}})
    assert response.status_code == mock.get("status", 200)
    for name in UPSTREAM_HEADERS:
        if name != "connection":
            assert name not in response.headers, name
    assert "x-mock-hop" not in response.headers.get("connection", "")
    assert UPSTREAM_KEY not in response.text and UPSTREAM_KEY not in str(response.headers)
    if mock.get("status") == 400:
        assert "[redacted]" in response.json()["error"]["message"]


def test_the_upstream_key_is_redacted_from_a_mid_stream_error_event(start_gateway):
    gw = start_gateway()
    with gw.client(gw.key()) as client:
        body = {**CHAT, "stream": True, "mock": {"error_event_after": 2, "message": f"key {UPSTREAM_KEY} is over quota"}}
        response = client.post("/v1/chat/completions", json=body)
    error = json.loads(sse_events(response.text)[-1])["error"]
    assert error["message"] == "key [redacted] is over quota"
    assert UPSTREAM_KEY not in response.text


def test_error_messages_never_echo_a_presented_key(start_gateway):
    gw = start_gateway()
    good = gw.key()
    unknown = "sk-aisix-" + "Q" * 43
    revoked = gw.key()
    gw.store.set_enabled(gw.key_id(revoked), enabled=False)
    cases = [
        ({"authorization": f"Bearer {unknown}"}, CHAT, unknown),
        ({"authorization": f"Token {unknown}"}, CHAT, unknown),
        ({"authorization": f"Bearer {unknown} extra"}, CHAT, unknown),
        ({"authorization": f"Bearer {revoked}"}, CHAT, revoked),
        ({"authorization": f"Bearer {good}"}, None, good),  # malformed JSON that contains the key
    ]
    for headers, body, secret in cases:
        content = json.dumps(body).encode() if body else f'{{"model": "{good}", "messages": [oops'.encode()
        response = httpx.post(gw.url + "/v1/chat/completions", content=content,
                              headers={**headers, "content-type": "application/json"})
        assert response.status_code in (400, 401), response.text
        assert secret[9:20] not in response.text, response.text


class ExplodingHook(Hook):
    """Unexpected failures, to make the gateway log tracebacks."""

    async def pre_call(self, call):
        if call.body.get("marker") == "explode-pre":
            raise RuntimeError("pre_call bug")

    def on_chunk(self, call, data):
        if call.body.get("marker") == "explode-chunk":
            raise RuntimeError("on_chunk bug")

    async def post_call(self, call):
        if call.body.get("marker") == "explode-post":
            raise RuntimeError("post_call bug")


def test_no_key_appears_in_any_log_line(start_gateway, caplog):
    """Every logger at DEBUG (the gateway, httpx, aiohttp, botocore, uvicorn) through successes,
    refusals, upstream failures and gateway bugs: neither a client key nor the upstream key is logged."""
    gw = start_gateway(hooks=[ExplodingHook()])
    secret = gw.key(tpm=1_000_000)
    revoked = gw.key()
    gw.store.set_enabled(gw.key_id(revoked), enabled=False)
    unknown = "sk-aisix-" + "Z" * 43
    with caplog.at_level(logging.DEBUG):
        with gw.client(secret) as client:
            for stream in (False, True):
                for mock in ({}, {"status": 401, "message": f"bad key {UPSTREAM_KEY}"},
                             {"status": 422, "message": f"bad key {UPSTREAM_KEY}"}, {"fail_after": 2},
                             {"error_event_after": 2, "message": UPSTREAM_KEY}, {"malformed_after": 1}):
                    client.post("/v1/chat/completions", json={**CHAT, "stream": stream, "mock": mock})
                for marker in ("explode-pre", "explode-chunk", "explode-post"):
                    client.post("/v1/chat/completions", json={**CHAT, "stream": stream, "marker": marker})
            client.get("/v1/models")
        for key in (unknown, revoked, "Bearer", f"{secret}x"):
            httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
        eventually(lambda: "post_call bug" in caplog.text)
    assert "pre_call bug" in caplog.text and "on_chunk bug" in caplog.text, "the bugs were logged"
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for key in (secret, revoked, unknown, UPSTREAM_KEY):
        assert key not in logged, f"{key[:12]}... was logged"
