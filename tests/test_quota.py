"""Quota leases over the DynamoDB counters (moto): fewer round trips, never over the limit."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aisix.quota import Quota
from aisix.store import AsyncStore, KeyRecord, RateLimited, StoreUnavailable, window_start
from conftest import wait_for_fresh_window


class CountingStore(AsyncStore):
    def __init__(self, store):
        super().__init__(store)
        self.takes = 0
        self.adds = 0

    async def take(self, *args):
        self.takes += 1
        return await super().take(*args)

    async def add(self, *args, **kwargs):
        self.adds += 1
        return await super().add(*args, **kwargs)


def key(rpm=None, tpm=None, key_id="key_quota"):
    return KeyRecord(key_id, "h", "n", None, rpm, tpm)


def test_a_busy_key_is_served_from_leases_not_a_round_trip_per_request(store):
    wait_for_fresh_window()
    counting = CountingStore(store)
    quota = Quota(counting)
    k = key(rpm=10_000)

    async def run():
        for _ in range(200):
            await quota.admit(k)
        await quota.close()

    asyncio.run(run())
    assert counting.takes <= 12, f"{counting.takes} DynamoDB calls for 200 requests"
    assert store.read_window(k.key_id).requests == 200, "unused leased requests are given back on close"


def test_instances_together_never_take_more_than_the_limit(store):
    wait_for_fresh_window(margin=15)
    quotas = [Quota(AsyncStore(store)) for _ in range(4)]
    k = key(rpm=50)

    async def run():
        async def one(i):
            try:
                await quotas[i % 4].admit(k)
                return True
            except RateLimited:
                return False

        return await asyncio.gather(*(one(i) for i in range(200)))

    admitted = asyncio.run(run())
    assert admitted.count(True) == 50
    assert store.read_window(k.key_id).requests == 50


def test_token_charges_are_coalesced_and_flushed_on_close(store):
    counting = CountingStore(store)
    quota = Quota(counting, flush_seconds=30)
    k = key(tpm=1_000_000)

    async def run():
        for _ in range(10):
            await quota.charge(k, 7)
        assert counting.adds == 0
        await quota.close()

    asyncio.run(run())
    assert counting.adds == 1
    assert store.read_window(k.key_id).tokens == 70


def test_tokens_seen_from_other_instances_refuse_locally(store):
    wait_for_fresh_window()
    a, b = Quota(AsyncStore(store), flush_seconds=0), Quota(AsyncStore(store), flush_seconds=0)
    k = key(tpm=100)

    async def run():
        await a.admit(k)
        await a.charge(k, 150)
        with pytest.raises(RateLimited):
            await b.admit(k)  # b learns the window's tokens from DynamoDB
        with pytest.raises(RateLimited):
            await a.admit(k)  # a already knew, refuses without a round trip

    asyncio.run(run())


def test_a_charge_that_cannot_be_written_is_retried_then_logged_with_its_amounts(caplog):
    class DownStore:
        calls = 0

        async def add(self, *args, **kwargs):
            DownStore.calls += 1
            raise StoreUnavailable("ThrottlingException")

    quota = Quota(DownStore(), flush_seconds=0)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="aisix.quota"):
        asyncio.run(quota.charge(key(tpm=10, key_id="key_lost"), 123))
    assert DownStore.calls == 3
    assert "key_id=key_lost" in caplog.text and "tokens=123" in caplog.text
    assert f"window={window_start()}" in caplog.text
