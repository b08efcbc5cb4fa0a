"""Quota leases over the DynamoDB counters (moto): fewer round trips, never over the limit.

Every test runs its quotas on a `FakeClock`: the windows are the test's own, and a test
that needs a minute to turn moves the clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from aisix.quota import Quota, View, reset_seconds
from aisix.store import AsyncStore, KeyRecord, RateLimited, Store, StoreUnavailable, Usage, make_client, window_start
from conftest import FakeClock


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


def test_a_busy_key_is_served_from_leases_not_a_round_trip_per_request(store, clock):
    counting = CountingStore(store)
    quota = Quota(counting, clock=clock)
    k = key(rpm=10_000)

    async def run():
        for _ in range(200):
            await quota.admit(k)
        await quota.close()

    asyncio.run(run())
    assert counting.takes <= 12, f"{counting.takes} DynamoDB calls for 200 requests"
    assert store.read_window(k.key_id, clock()).requests == 200, "unused leased requests are given back on close"


def test_a_high_rpm_key_takes_leases_past_64_and_a_low_rpm_key_does_not(store, clock):
    """The lease cap is 1% of the key's RPM (at least 64): a key with room for 100,000 requests a
    minute is not held to a DynamoDB write per 64 requests; one with 1,000 still is."""

    async def takes_for(k, n):
        counting = CountingStore(store)
        quota = Quota(counting, clock=clock)
        for _ in range(n):
            await quota.admit(k)
        await quota.close()
        return counting.takes

    high = asyncio.run(takes_for(key(rpm=100_000, key_id="key_high"), 3000))
    low = asyncio.run(takes_for(key(rpm=1_000, key_id="key_low"), 600))
    # Doubling from 1 to the cap of 1,000 is 11 leases, and 3,000 requests then need 2 more; room is left
    # for a lease that halves after a stall of the machine. A cap of 64 would need ~50.
    assert high <= 24, f"{high} DynamoDB calls for 3,000 requests"
    # Capped at 64 (and a quarter of what is left near the end): more than 600 / 64 calls.
    assert low >= 600 // 64, f"{low} DynamoDB calls for 600 requests under a 1,000 RPM limit"
    assert store.read_window("key_high", clock()).requests == 3000


@pytest.fixture(scope="module")
def atomic_stores(moto_endpoint, atomic_moto_endpoint):
    """Four instances' stores over `atomic_moto_endpoint`, shared by the trials (a botocore
    client costs ~0.5 s to build). One attempt and a long time-out each: a retried conditional
    write that had in fact landed would be counted twice (the production client's short
    time-outs are tested in test_state_faults.py)."""
    suffix = uuid.uuid4().hex[:8]
    tables = Store(make_client(moto_endpoint, "us-east-1"), f"keys-{suffix}", f"counters-{suffix}")
    tables.create_tables()
    stores = [
        AsyncStore(Store(make_client(atomic_moto_endpoint, "us-east-1", timeout=30, attempts=1),
                         tables.keys_table, tables.counters_table))
        for _ in range(4)
    ]
    yield tables, stores
    for s in stores:
        s.close()


@pytest.mark.parametrize("trial", range(20))
def test_instances_together_never_take_more_than_the_limit(atomic_stores, trial):
    """200 concurrent requests on 4 instances against 50 RPM: exactly 50 admitted, 20 times over.

    The instances write to `atomic_moto_endpoint` (moto served one request at a time),
    because moto's threaded server lets two concurrent conditional UpdateItems pass one
    condition, which DynamoDB never does: against it this test measures moto, not the quota.
    """
    tables, stores = atomic_stores
    clock = FakeClock()
    quotas = [Quota(s, clock=clock) for s in stores]
    k = key(rpm=50, key_id=f"key_exact{trial}")

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
    assert tables.read_window(k.key_id, clock()).requests == 50


def test_a_new_window_admits_again_and_the_reset_counts_down_to_it(store, clock):
    quota = Quota(AsyncStore(store), clock=clock)
    k = key(rpm=2)

    async def run():
        first = await quota.admit(k)
        await quota.admit(k)
        with pytest.raises(RateLimited) as refused:
            await quota.admit(k)
        clock.advance(30)
        with pytest.raises(RateLimited):
            await quota.admit(k)  # still the same minute: refused locally
        clock.next_window()
        again = await quota.admit(k)
        return first, refused.value.usage, again

    first, refused, again = asyncio.run(run())
    assert refused.requests == 2 and refused.window_start == first.window
    assert again.window == first.window + 60 and again.requests == 1
    assert reset_seconds(View(again.window, 0, 0), clock()) == 55, "5 s into the window: 55 s to its end"
    # (The table may hold one more: a lease taken ahead in the background, given back on close.)


def test_token_charges_are_coalesced_and_flushed_on_close(store, clock):
    counting = CountingStore(store)
    quota = Quota(counting, flush_seconds=30, clock=clock)
    k = key(tpm=1_000_000)

    async def run():
        for _ in range(10):
            await quota.charge(k, 7)
        assert counting.adds == 0
        await quota.close()

    asyncio.run(run())
    assert counting.adds == 1
    assert store.read_window(k.key_id, clock()).tokens == 70


def test_tokens_seen_from_other_instances_refuse_locally(store, clock):
    a = Quota(AsyncStore(store), flush_seconds=0, clock=clock)
    b = Quota(AsyncStore(store), flush_seconds=0, clock=clock)
    k = key(tpm=100)

    async def run():
        await a.admit(k)
        await a.charge(k, 150)
        with pytest.raises(RateLimited):
            await b.admit(k)  # b learns the window's tokens from DynamoDB
        with pytest.raises(RateLimited):
            await a.admit(k)  # a already knew, refuses without a round trip

    asyncio.run(run())


def test_a_charge_that_cannot_be_written_is_retried_then_logged_with_its_amounts(caplog, clock):
    class DownStore:
        calls = 0

        async def add(self, *args, **kwargs):
            DownStore.calls += 1
            raise StoreUnavailable("ThrottlingException")

    quota = Quota(DownStore(), flush_seconds=0, clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="aisix.quota"):
        asyncio.run(quota.charge(key(tpm=10, key_id="key_lost"), 123))
    assert DownStore.calls == 3
    assert "key_id=key_lost" in caplog.text and "tokens=123" in caplog.text
    assert f"window={window_start(clock())}" in caplog.text


def test_a_charge_made_while_a_flush_is_writing_is_written_too(clock):
    """The flush in progress is the one the second charge counts on: it must not be left pending
    until some later charge happens to start another flush."""

    class GatedStore:
        def __init__(self) -> None:
            self.entered = asyncio.Event()
            self.gate = asyncio.Event()
            self.written = 0

        async def add(self, key_id, window, requests=0, tokens=0, charge_id=None):
            self.entered.set()
            await self.gate.wait()
            self.written += tokens
            return type("Usage", (), {"requests": 0, "tokens": self.written})()

    async def run() -> int:
        gated = GatedStore()
        quota = Quota(gated, flush_seconds=0.01, clock=clock)  # type: ignore[arg-type]
        k = key(tpm=1000)
        await quota.charge(k, 5)
        await asyncio.wait_for(gated.entered.wait(), 10)  # the flush is writing the first charge
        await quota.charge(k, 7)
        gated.gate.set()
        for _ in range(1000):  # polled, bounded: the state, not a time
            if gated.written == 12:
                break
            await asyncio.sleep(0.01)
        return gated.written

    assert asyncio.run(run()) == 12


def test_a_lease_answered_after_a_newer_token_charge_does_not_lower_the_tokens_seen(clock):
    """DynamoDB's answers can come back out of order: a background lease taken before a token charge
    but answered after it carries the older, lower token count. Taking that in would let this instance
    admit past the key's TPM; the newer count must stand."""

    class OutOfOrderStore:
        def __init__(self) -> None:
            self.tokens = 0
            self.requests = 0
            self.lease_asked = asyncio.Event()
            self.release_lease = asyncio.Event()
            self.leases = 0

        async def take(self, key_id, window, size, rpm, tpm):
            self.leases += 1
            self.requests += size
            snapshot = Usage(self.requests, self.tokens, window)  # what DynamoDB had when it was asked
            if self.leases == 2:  # the background refill: its answer is held back
                self.lease_asked.set()
                await self.release_lease.wait()
            return snapshot

        async def add(self, key_id, window, requests=0, tokens=0, charge_id=None):
            self.tokens += tokens
            return Usage(self.requests, self.tokens, window)

    async def run() -> None:
        store = OutOfOrderStore()
        quota = Quota(store, flush_seconds=0, clock=clock)  # type: ignore[arg-type]
        k = key(tpm=100)
        await quota.admit(k)  # the first lease; the next is taken in the background
        await asyncio.wait_for(store.lease_asked.wait(), 10)
        await quota.charge(k, 150)  # written at once: DynamoDB now says 150 tokens
        store.release_lease.set()  # the refill's answer, from before the charge, lands now
        for _ in range(1000):  # polled, bounded: the refill's end, not a time
            if quota._keys[k.key_id].refill is None:
                break
            await asyncio.sleep(0.001)
        with pytest.raises(RateLimited):
            await quota.admit(k)

    asyncio.run(run())
