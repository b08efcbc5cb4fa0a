"""RPM and TPM limits in DynamoDB (moto): headers, 429s, and exactness across instances."""

from __future__ import annotations

import asyncio

import httpx

from conftest import CHAT, eventually, wait_for_fresh_window

RATE_HEADERS = ("limit-requests", "remaining-requests", "reset-requests", "limit-tokens", "remaining-tokens",
                "reset-tokens")


def test_successful_responses_carry_rate_limit_headers(start_gateway):
    wait_for_fresh_window()
    gw = start_gateway()
    with gw.client(gw.key(rpm=5, tpm=10_000)) as client:
        first = client.post("/v1/chat/completions", json=CHAT)
        second = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    for response in (first, second):
        assert response.status_code == 200
        for name in RATE_HEADERS:
            assert f"x-ratelimit-{name}" in response.headers
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert second.headers["x-ratelimit-remaining-requests"] == "3"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")


def test_key_over_its_rpm_gets_429_with_headers(start_gateway):
    wait_for_fresh_window()
    gw = start_gateway()
    with gw.client(gw.key(rpm=2)) as client:
        statuses = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(2)]
        refused = client.post("/v1/chat/completions", json=CHAT)
    assert statuses == [200, 200]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_tokens_charged_after_a_call_refuse_the_next_one(start_gateway):
    wait_for_fresh_window()
    gw = start_gateway()
    secret = gw.key(tpm=20)
    with gw.client(secret) as client:
        first = client.post("/v1/chat/completions", json={**CHAT, "stream": True, "mock": {"words": 30}})
        assert first.status_code == 200
        eventually(lambda: gw.store.read_window(gw.key_id(secret)).tokens)
        refused = client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_keys_without_limits_make_no_counter_writes(start_gateway):
    gw = start_gateway()
    secret = gw.key()
    with gw.client(secret) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert "x-ratelimit-limit-requests" not in response.headers
    assert gw.store.read_window(gw.key_id(secret)).requests == 0


def test_concurrent_requests_across_instances_never_exceed_the_rpm(start_gateway):
    """200 concurrent requests on 4 gateway instances sharing one table: exactly 50 admitted."""
    wait_for_fresh_window(margin=20)
    gateways = [start_gateway() for _ in range(4)]
    secret = gateways[0].key(rpm=50)

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            async def one(i: int) -> int:
                url = gateways[i % 4].url + "/v1/chat/completions"
                response = await client.post(url, json=CHAT, headers={"authorization": f"Bearer {secret}"})
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(200)))

    statuses = asyncio.run(fire())
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 150
    assert gateways[0].store.read_window(gateways[0].key_id(secret)).requests == 50
