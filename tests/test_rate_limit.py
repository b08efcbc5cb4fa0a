"""RPM and TPM limits in DynamoDB (moto): headers, 429s, and exactness across instances.

Gateways here run their key cache and rate-limit windows on a `FakeClock`: the window is
the test's own, and a window boundary is a clock move, not a wait.
"""

from __future__ import annotations

import asyncio

import httpx

from aisix.hooks import RateLimitHook
from aisix.store import make_client
from conftest import CHAT, eventually

RATE_HEADERS = ("limit-requests", "remaining-requests", "reset-requests", "limit-tokens", "remaining-tokens",
                "reset-tokens")


def test_successful_responses_carry_rate_limit_headers(start_gateway, clock):
    gw = start_gateway(clock=clock)
    with gw.client(gw.key(rpm=5, tpm=10_000)) as client:
        first = client.post("/v1/chat/completions", json=CHAT)
        clock.advance(10)
        second = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    for response in (first, second):
        assert response.status_code == 200
        for name in RATE_HEADERS:
            assert f"x-ratelimit-{name}" in response.headers
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert second.headers["x-ratelimit-remaining-requests"] == "3"
    # The clock starts 5 s into its minute: the window resets in 55 s, then 45 s.
    assert first.headers["x-ratelimit-reset-requests"] == "55s"
    assert second.headers["x-ratelimit-reset-requests"] == second.headers["x-ratelimit-reset-tokens"] == "45s"


def test_key_over_its_rpm_gets_429_with_headers_until_the_next_window(start_gateway, clock):
    gw = start_gateway(clock=clock)
    secret = gw.key(rpm=2)
    with gw.client(secret) as client:
        statuses = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(2)]
        clock.advance(40)
        refused = client.post("/v1/chat/completions", json=CHAT)
        clock.next_window()
        again = client.post("/v1/chat/completions", json=CHAT)
    assert statuses == [200, 200]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["retry-after"] == "15", "45 s into the minute: retry in 15 s"
    assert again.status_code == 200, "a new minute, a new window"
    assert again.headers["x-ratelimit-remaining-requests"] == "1"


def test_tokens_charged_after_a_call_refuse_the_next_one(start_gateway, clock):
    gw = start_gateway(clock=clock)
    secret = gw.key(tpm=20)
    with gw.client(secret) as client:
        first = client.post("/v1/chat/completions", json={**CHAT, "stream": True, "mock": {"words": 30}})
        assert first.status_code == 200
        limiter = next(h for h in gw.gateway.pipeline.hooks if isinstance(h, RateLimitHook))
        # Charged after the stream has ended: wait until the gateway has written it and read the totals back.
        eventually(lambda: gw.window(secret).tokens and limiter.quota.idle())
        refused = client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_keys_without_limits_make_no_counter_writes(start_gateway, clock):
    gw = start_gateway(clock=clock)
    secret = gw.key()
    with gw.client(secret) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert "x-ratelimit-limit-requests" not in response.headers
    assert gw.window(secret).requests == 0


def test_concurrent_requests_across_instances_never_exceed_the_rpm(start_gateway, clock, atomic_moto_endpoint):
    """200 concurrent requests on 4 gateway instances sharing one table: exactly 50 admitted.

    The gateways' DynamoDB is `atomic_moto_endpoint` (moto served one request at a time): moto's
    threaded server lets two concurrent conditional UpdateItems pass one condition, which real
    DynamoDB never does. One attempt with a long time-out per call, so that a conditional write
    is never sent twice (test_quota.py runs the same race 20 times without HTTP).
    """
    gateways = [
        start_gateway(clock=clock, endpoint=atomic_moto_endpoint,
                      dynamodb_client=make_client(atomic_moto_endpoint, "us-east-1", timeout=30, attempts=1))
        for _ in range(4)
    ]
    secret = gateways[0].key(rpm=50)

    async def fire() -> list[int]:
        # One client per gateway: httpcore's pool scans its connections on every request, and one
        # pool of 200 spent more CPU than the gateways did. Still 200 requests in flight at once.
        limits = httpx.Limits(max_connections=50)
        clients = [httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) for gw in gateways]

        async def one(i: int) -> int:
            response = await clients[i % 4].post("/v1/chat/completions", json=CHAT,
                                                 headers={"authorization": f"Bearer {secret}"})
            return response.status_code

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            for client in clients:
                await client.aclose()

    statuses = asyncio.run(fire())
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 150
    assert gateways[0].window(secret).requests == 50
