"""Rate-limit quota served locally from leases on the shared DynamoDB counters.

One DynamoDB round trip per request would cost more CPU than the rest of the
gateway together (~1.6 ms of botocore per call) and put its latency before
every first byte. So each instance takes requests from a key's minute window
in *leases*: one conditional UpdateItem reserves a batch of requests for this
instance, which it then hands out locally. What each instance reserves is
counted in the table before it is used, so the sum over all instances never
exceeds the limit.

* A lease starts at one request and doubles while it runs out within a
  second (a busy key), halving otherwise: a busy instance settles near a
  lease per second. It never takes more than a quarter of what the window
  has left, so instances don't starve each other, nor more than 1% of the
  key's RPM (at least ``MAX_LEASE``), which bounds what an instance that
  dies takes with it. (A flat cap of 64 cost a high-RPM key a DynamoDB
  write per 64 requests: ~0.15 ms of CPU per request and 2x the p99 after
  a burst, bench/RESULTS.md.)
* Tokens are charged after each call into a per-key tally that is written in
  one UpdateItem per key per ``flush_seconds`` (``0``: at once). The write
  returns the window's totals, which is how an instance learns what the
  others have used.
* Where nothing may run in the background (``background=False``: Lambda
  freezes an instance between invocations), the tally is written by the
  first charge that finds it older than ``flush_seconds``, after the answer
  has left, and at shutdown (`close`, on SIGTERM). Otherwise a timer writes it.
* The next lease is taken in the background once half of the current one is
  used (not on Lambda), so a busy key's requests seldom wait for DynamoDB.
* A window found full is refused locally until it ends.
* `close` gives back unused requests and writes pending tokens.

What a user gets: limits are never exceeded by the instances together for
requests; an instance may refuse while another holds unused quota (at most
a quarter of what was left); TPM is enforced from the totals each instance
last saw, so concurrent instances can overshoot it by the calls in flight,
as with any after-the-fact token count. A lease dies with its window (one
minute) if its instance dies; so do its tokens not yet written (at most
``flush_seconds`` of its calls, or what it charged since its last call when
it is killed without the SIGTERM that `close` runs on).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from .store import WINDOW_SECONDS, AsyncStore, KeyRecord, RateLimited, StoreUnavailable, Usage, window_start

log = logging.getLogger("aisix.quota")

MAX_LEASE = 64  # the cap for keys without an RPM limit, and the least cap for those with one
LEASE_SHARE = 100  # a lease is at most 1/LEASE_SHARE of the key's RPM
CHARGE_ATTEMPTS = 3


@dataclass(slots=True)
class View:
    """What a call is told about its key's window (for headers and refusals)."""

    window: int
    requests: int  # used in the window, by every instance
    tokens: int


@dataclass(slots=True)
class _KeyState:
    window: int = -1
    left: int = 0  # requests leased to this instance and not yet used
    size: int = 1  # the next lease's size
    leased_at: float = 0.0
    requests: int = 0  # the window's requests, as DynamoDB last told us
    tokens: int = 0  # the window's tokens, as DynamoDB last told us
    full: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refill: "asyncio.Task[None] | None" = None

    def view(self) -> View:
        return View(self.window, self.requests - self.left, self.tokens)

    def saw(self, usage: Usage) -> None:
        """Take in the window's counts from a DynamoDB answer. Within a window both only grow, but
        answers can arrive out of order (a background lease answered after a token charge that was
        written later): an older, lower count must never replace a newer one, or the key would be
        admitted past its TPM on this instance."""
        self.requests, self.tokens = max(self.requests, usage.requests), max(self.tokens, usage.tokens)


class Quota:
    def __init__(
        self,
        store: AsyncStore,
        flush_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        self.store = store
        self.clock = clock  # wall time for windows and resets; injectable so tests move time, not wait
        self.flush_seconds = flush_seconds
        self.background = background
        self._keys: dict[str, _KeyState] = {}
        self._pending: dict[tuple[str, int], int] = {}  # (key_id, window) -> tokens not yet written
        self._pending_since = 0.0  # time.monotonic() of the oldest charge not yet written
        self._flusher: asyncio.Task[None] | None = None

    async def admit(self, key: KeyRecord) -> View:
        """Take one request for ``key``; raises `RateLimited` (with a `View`) or `StoreUnavailable`."""
        state = self._keys.get(key.key_id)
        if state is None:
            state = self._keys[key.key_id] = _KeyState()
        window = window_start(self.clock())
        if state.window == window and state.left > 0 and self._tokens_ok(key, state, window):
            # The common case: served from the lease, with no await at all.
            state.left -= 1
            self._refill_ahead(key, state, window)
            return state.view()
        async with state.lock:
            window = window_start(self.clock())
            if state.window != window:
                state.window, state.left, state.full = window, 0, False
                state.requests = state.tokens = 0
            if not self._tokens_ok(key, state, window) or (state.full and state.left == 0):
                raise RateLimited(Usage(state.requests, state.tokens, window))
            if state.left == 0:
                await self._lease(key, state, window)
            state.left -= 1
            self._refill_ahead(key, state, window)
            return state.view()

    def _tokens_ok(self, key: KeyRecord, state: _KeyState, window: int) -> bool:
        return key.tpm is None or state.tokens + self._unwritten(key.key_id, window) < key.tpm

    def _refill_ahead(self, key: KeyRecord, state: _KeyState, window: int) -> None:
        """Lease the next batch in the background once half the lease is used, so that a busy
        key's requests do not wait for DynamoDB. Not where nothing may run in the background
        (Lambda freezes an instance as soon as it has answered)."""
        if (
            self.background
            and state.refill is None
            and not state.full
            and state.left <= state.size // 2
        ):
            state.refill = asyncio.get_running_loop().create_task(self._refill(key, state, window))

    async def _refill(self, key: KeyRecord, state: _KeyState, window: int) -> None:
        try:
            async with state.lock:
                if state.window == window and not state.full:
                    await self._lease(key, state, window)
        except (RateLimited, StoreUnavailable):
            pass  # the next request that finds the lease empty tries again, and reports
        finally:
            state.refill = None

    async def _lease(self, key: KeyRecord, state: _KeyState, window: int) -> None:
        now = time.monotonic()
        cap = MAX_LEASE if key.rpm is None else max(MAX_LEASE, key.rpm // LEASE_SHARE)
        state.size = min(state.size * 2, cap) if now - state.leased_at < 1.0 else max(1, state.size // 2)
        size = state.size
        if key.rpm is not None:
            size = max(1, min(size, (key.rpm - state.requests) // 4))
        try:
            usage = await self.store.take(key.key_id, window, size, key.rpm, key.tpm)
        except RateLimited as refused:
            room = (key.rpm - refused.usage.requests) if key.rpm is not None else 0
            tokens_ok = key.tpm is None or refused.usage.tokens < key.tpm
            if room <= 0 or not tokens_ok:
                state.saw(refused.usage)
                state.full = True
                raise
            size = min(size, room)  # others took most of what was left: take what remains
            usage = await self.store.take(key.key_id, window, size, key.rpm, key.tpm)
        state.saw(usage)
        state.left, state.leased_at = state.left + size, now

    def _unwritten(self, key_id: str, window: int) -> int:
        return self._pending.get((key_id, window), 0) if self._pending else 0

    async def charge(self, key: KeyRecord, tokens: int) -> None:
        """Charge ``tokens`` to the current window: written now, or within ``flush_seconds``."""
        if tokens <= 0:
            return
        slot = (key.key_id, window_start(self.clock()))
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending[slot] = self._pending.get(slot, 0) + tokens
        if self.flush_seconds <= 0:
            await self.flush()
        elif not self.background:
            if time.monotonic() - self._pending_since >= self.flush_seconds:
                await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        # Charges that come while a flush is writing find this task still running and start no
        # other: it goes round again for them, or they would wait for the next charge.
        while self._pending:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    def idle(self) -> bool:
        """No token charge waiting or being written (what this instance knows is up to date)."""
        return not self._pending and (self._flusher is None or self._flusher.done())

    async def flush(self) -> None:
        """Write every pending token charge: retried, and logged with its amounts if lost."""
        pending, self._pending = self._pending, {}
        for (key_id, window), tokens in pending.items():
            charge_id = uuid.uuid4().hex  # the same for every retry: written once at most
            for attempt in range(CHARGE_ATTEMPTS):
                try:
                    usage = await self.store.add(key_id, window, tokens=tokens, charge_id=charge_id)
                except StoreUnavailable as exc:
                    if attempt + 1 == CHARGE_ATTEMPTS:
                        # Logged with the amounts so it can be reconciled by hand.
                        log.error(
                            "token charge lost after %d attempts: key_id=%s window=%d tokens=%d error=%s",
                            CHARGE_ATTEMPTS, key_id, window, tokens, exc,
                        )
                        break
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                state = self._keys.get(key_id)
                if state is not None and state.window == window:
                    state.saw(usage)
                break

    async def close(self) -> None:
        """Give back unused leased requests of the current window, and write pending tokens."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        for state in self._keys.values():
            if state.refill is not None:
                await asyncio.gather(state.refill, return_exceptions=True)
        await self.flush()
        window = window_start(self.clock())
        for key_id, state in self._keys.items():
            if state.window == window and state.left > 0:
                try:
                    await self.store.add(key_id, window, requests=-state.left)
                except StoreUnavailable:
                    pass  # the lease expires with its window anyway
                state.left = 0


def reset_seconds(view: View, now: float | None = None) -> int:
    return max(0, view.window + WINDOW_SECONDS - int(time.time() if now is None else now))
