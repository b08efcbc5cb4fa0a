"""API keys: how they are made, hashed, compared and cached.

Keys are 32 random bytes, so a single SHA-256 is the right hash (a slow
password hash buys nothing against a 256-bit secret and would cost every
request). Only the hash is stored; it is also the table's key, so a lookup
never needs the plain key. The stored hash is compared with the computed
one in constant time all the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Awaitable, Callable

from .errors import GatewayError
from .store import KeyRecord

if TYPE_CHECKING:
    from .store import Store

KEY_PREFIX = "sk-aisix-"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_for(key_hash: str) -> str:
    """The public name of a key in lists, logs and counters: not enough to guess it."""
    return "key_" + key_hash[:12]


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise invalid_key("Missing API key. Send it as 'Authorization: Bearer <key>'.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise invalid_key("Malformed Authorization header. Use 'Authorization: Bearer <key>'.")
    return token


def invalid_key(message: str = "Incorrect API key provided.") -> GatewayError:
    return GatewayError(401, message, type="invalid_request_error", code="invalid_api_key")


class KeyCache:
    """Resolves a presented key to its record, remembering answers for ``ttl`` seconds.

    Unknown keys are remembered too, so a flood of bad keys costs DynamoDB
    one read per key per ``ttl``. A revoked or disabled key is refused within
    ``ttl`` seconds on every instance: a record is never served more than
    ``ttl`` after it was read. Concurrent misses for one key share a single
    lookup, so a burst on a cold cache costs one DynamoDB read.

    A key in use is read again in the background once half its time has passed,
    so a busy key never waits for DynamoDB: when every call waited for the one
    lookup at expiry, that wait was the p99 of a busy gateway (bench/RESULTS.md).
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[KeyRecord | None]],
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self.clock = clock  # injectable, so tests move time past ``ttl`` instead of sleeping
        self._max_entries = max_entries
        # key hash -> (served until, read again in the background from, record)
        self._entries: dict[str, tuple[float, float, KeyRecord | None]] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def authenticate(self, secret: str) -> KeyRecord:
        key_hash = hash_key(secret)
        now = self.clock()
        entry = self._entries.get(key_hash)
        if entry is not None and entry[0] > now:
            record = entry[2]
            if now >= entry[1] and key_hash not in self._inflight:
                self._start_lookup(key_hash)  # ahead of expiry; this call does not wait for it
        else:
            record = await self._resolve(key_hash)
        if record is None or not hmac.compare_digest(record.key_hash, key_hash):
            raise invalid_key()
        if not record.enabled:
            raise invalid_key("This API key has been revoked.")
        return record

    async def _resolve(self, key_hash: str) -> KeyRecord | None:
        lookup = self._inflight.get(key_hash) or self._start_lookup(key_hash)
        # Shielded: one waiter giving up must not cancel the lookup the others share.
        return await asyncio.shield(lookup)

    def _start_lookup(self, key_hash: str) -> "asyncio.Future[KeyRecord | None]":
        lookup = self._inflight[key_hash] = asyncio.ensure_future(self._fetch(key_hash))
        lookup.add_done_callback(lambda done: self._lookup_done(key_hash, done))
        return lookup

    def _lookup_done(self, key_hash: str, lookup: "asyncio.Future[KeyRecord | None]") -> None:
        self._inflight.pop(key_hash, None)
        if not lookup.cancelled():
            lookup.exception()  # a failed read ahead is not remembered; the call at expiry reads again and reports

    async def _fetch(self, key_hash: str) -> KeyRecord | None:
        started = self.clock()  # the record is as old as the read's start
        record = await self._lookup(key_hash)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key_hash] = (started + self._ttl, started + self._ttl / 2, record)
        return record

    def clear(self) -> None:
        self._entries.clear()


def issue_key(
    store: "Store",
    name: str,
    models: frozenset[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    secret: str | None = None,
) -> tuple[str, KeyRecord]:
    """Create a key; the secret is returned once and only its hash is stored."""
    secret = secret or new_secret()
    key_hash = hash_key(secret)
    record = KeyRecord(
        key_id=key_id_for(key_hash),
        key_hash=key_hash,
        name=name,
        models=models,
        rpm=rpm,
        tpm=tpm,
        enabled=True,
        created_at=int(time.time()),
    )
    store.put_key(record)
    return secret, record
