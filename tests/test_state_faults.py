"""DynamoDB faults (throttling, time-outs, outages): keys fail closed, rate limits follow the
configured policy, token charges are retried and never lost silently.

The gateway talks to a faulty endpoint in front of moto (`faultkit.DynamoFaults`) that answers
as DynamoDB does when throttled, or never answers (for 30 s), or is not there at all. Its botocore
client has 1.5 s time-outs and one attempt; production uses `aisix.store.make_client` (1 s
time-outs, 2 attempts). "Promptly" is checked as an order of events, not a duration: the client
(10 s time-out) has its answer while the silent DynamoDB call is still hanging.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Iterator

import pytest

from aisix.app import create_app
from aisix.config import ConfigError, Settings, parse_config
from aisix.gateway import Gateway
from aisix.store import AsyncStore, Store, make_client, window_start
from conftest import CHAT, RunningGateway, ServerThread, eventually, free_port, models_config
from faultkit import DynamoFaults, charged, dynamodb_client

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak"


@pytest.fixture(scope="module")
def tables(moto_endpoint) -> Store:
    suffix = uuid.uuid4().hex[:8]
    store = Store(make_client(moto_endpoint, "us-east-1"), f"keys-{suffix}", f"counters-{suffix}")
    store.create_tables()
    return store


@pytest.fixture(scope="module")
def ddb_server(moto_endpoint) -> Iterator[tuple[DynamoFaults, str]]:
    faults = DynamoFaults(moto_endpoint)
    server = ServerThread(faults).start()
    yield faults, server.url
    server.stop()


@pytest.fixture
def ddb(ddb_server) -> Iterator[DynamoFaults]:
    faults, _ = ddb_server
    faults.heal()
    faults.forwarded.clear()
    yield faults
    faults.heal()


@pytest.fixture
def start_on(tables, upstream, ddb_server) -> Iterator[Any]:
    """Start a gateway whose DynamoDB is ``endpoint`` (default: the faulty one)."""
    started: list[ServerThread] = []

    def start(endpoint: str | None = None, attempts: int = 1, **settings: Any) -> RunningGateway:
        endpoint = endpoint or ddb_server[1]
        config = parse_config(models_config(upstream.base_url), {"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
        s = Settings(keys_table=tables.keys_table, counters_table=tables.counters_table, dynamodb_endpoint=endpoint,
                     **{"key_cache_seconds": 0.5, "token_flush_seconds": 0, **settings})
        store = AsyncStore(Store(dynamodb_client(endpoint, attempts), tables.keys_table, tables.counters_table))
        gateway = Gateway(s, config, store, hooks=[])
        server = ServerThread(create_app(gateway)).start()
        started.append(server)
        return RunningGateway(server.url, gateway, tables, server)

    yield start
    for server in started:
        server.stop()


def post(gw: RunningGateway, secret: str, body: dict[str, Any] | None = None) -> Any:
    """One call; a gateway that waited for a silent DynamoDB (30 s) would time this out (10 s)."""
    with gw.client(secret, timeout=10) as client:
        return client.post("/v1/chat/completions", json=body or CHAT)


def assert_503(response: Any, words: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "service_unavailable" and error["type"] == "server_error"
    assert words in error["message"]
    for internal in ("Throttling", "Provisioned", "botocore", "Traceback", "InternalServerError"):
        assert internal not in error["message"]


# --- keys fail closed --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["throttle", "provisioned", "internal", "hang", "refused"])
def test_key_lookups_that_fail_are_refused_with_503(start_on, ddb, tables, mode):
    """Throttled, erroring, silent or absent DynamoDB: no key can be checked, so no call passes."""
    gw = start_on(endpoint=f"http://127.0.0.1:{free_port()}" if mode == "refused" else None)
    secret = gw.key()
    if mode != "refused":
        ddb.fail(mode, op="GetItem")
    assert_503(post(gw, secret), "key store")
    ddb.heal()
    if mode != "refused":
        assert post(gw, secret).status_code == 200, "a failed lookup is not remembered"


def test_a_cached_key_stops_working_when_its_cache_time_passes_during_an_outage(start_on, ddb, clock):
    """The cache never outlives its time because DynamoDB is down: revocations keep their bound."""
    gw = start_on()
    gw.use_clock(clock)  # the key cache's 0.5 s pass when the test says so
    secret = gw.key()
    assert post(gw, secret).status_code == 200
    ddb.fail("throttle")
    clock.advance(0.4)
    assert post(gw, secret).status_code == 200, "within the cache time the key is known"
    clock.advance(0.2)
    assert_503(post(gw, secret), "key store")


# --- rate limits follow the policy -------------------------------------------------------------


def test_rate_limit_store_errors_refuse_calls_by_default(start_on, ddb):
    gw = start_on()  # AISIX_RATE_LIMIT_ON_STORE_ERROR unset: closed
    secret = gw.key(rpm=1000)
    ddb.fail("throttle", op="UpdateItem")
    assert_503(post(gw, secret), "Rate limits cannot be checked")


def test_rate_limit_store_errors_admit_calls_when_the_policy_is_open(start_on, ddb, caplog):
    gw = start_on(rate_limit_on_store_error="open")
    secret = gw.key(rpm=1000)
    ddb.fail("hang", op="UpdateItem")
    with caplog.at_level(logging.WARNING, logger="aisix.ratelimit"):
        response = post(gw, secret)
    assert response.status_code == 200, "answered while the counter write still hangs"
    assert gw.key_id(secret) in caplog.text and "unlimited" in caplog.text
    assert secret not in caplog.text


def test_the_policy_setting():
    assert Settings.from_env({}).rate_limit_on_store_error == "closed"
    assert Settings.from_env({"AISIX_RATE_LIMIT_ON_STORE_ERROR": "open"}).rate_limit_on_store_error == "open"
    assert Settings.from_env({"AISIX_RATE_LIMIT_ON_STORE_ERROR": "closed"}).rate_limit_on_store_error == "closed"
    with pytest.raises(ConfigError, match="AISIX_RATE_LIMIT_ON_STORE_ERROR"):
        Settings.from_env({"AISIX_RATE_LIMIT_ON_STORE_ERROR": "sometimes"})


# --- token charges -----------------------------------------------------------------------------

CHARGE = b"tok :t"  # only the post-call charge (Store.add) has this in its UpdateExpression


def usage_of(body: dict[str, Any]) -> int:
    return sum(len(m["content"]) for m in body["messages"]) // 4 + 1 + 12  # the mock's count, 12 words


def test_a_throttled_charge_is_retried_and_lands_exactly_once(start_on, ddb):
    gw = start_on()
    secret = gw.key(tpm=1_000_000)
    rule = ddb.fail("throttle", op="UpdateItem", match=CHARGE, times=2)
    response = post(gw, secret)
    assert response.status_code == 200
    key_id = gw.key_id(secret)
    # Three attempts at most (aisix.quota.CHARGE_ATTEMPTS): two refused, the third applied.
    assert eventually(lambda: ddb.answered("UpdateItem", CHARGE) == 1)
    assert rule.hits == 2, "the charge failed twice before it landed"
    assert charged(gw.store, key_id) == usage_of(CHAT)


def test_a_charge_that_cannot_be_written_is_logged_with_its_amounts(start_on, ddb, caplog):
    gw = start_on()
    secret = gw.key(tpm=1_000_000)
    ddb.fail("throttle", op="UpdateItem", match=CHARGE)
    with caplog.at_level(logging.ERROR, logger="aisix.quota"):
        response = post(gw, secret)
        assert response.status_code == 200, "a failing charge never reaches the client"
        eventually(lambda: "token charge lost" in caplog.text)
    key_id = gw.key_id(secret)
    line = next(r.getMessage() for r in caplog.records if "token charge lost" in r.getMessage())
    assert f"key_id={key_id}" in line and f"tokens={usage_of(CHAT)}" in line
    assert f"window={window_start()}" in line or f"window={window_start() - 60}" in line
    assert secret not in caplog.text
    assert charged(gw.store, key_id) == 0


def test_a_charge_whose_answer_is_lost_is_not_counted_twice(start_on, ddb):
    gw = start_on()
    secret = gw.key(tpm=1_000_000)
    ddb.fail("apply_then_hang", op="UpdateItem", match=CHARGE, times=1)
    assert post(gw, secret).status_code == 200
    key_id = gw.key_id(secret)
    # The first write lands but its answer never comes; the retry (same charge id) lands too.
    assert eventually(lambda: ddb.answered("UpdateItem", CHARGE) == 2)
    assert charged(gw.store, key_id) == usage_of(CHAT)
