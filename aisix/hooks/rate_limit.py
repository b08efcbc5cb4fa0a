"""RateLimitHook: requests and tokens per minute, per key, shared through DynamoDB.

Before the call, one conditional UpdateItem takes the request if the key's
current minute still has room for requests and tokens (`Store.hit`). After
the call, the tokens actually used are added to the same minute, so a key
over its TPM is refused from its next call on. Windows are fixed calendar
minutes; counters expire by DynamoDB TTL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from ..errors import GatewayError, service_unavailable
from ..store import WINDOW_SECONDS, AsyncStore, RateLimited, StoreUnavailable, Usage
from .base import Call, Hook

log = logging.getLogger("aisix.ratelimit")

CHARGE_ATTEMPTS = 3


class RateLimitHook(Hook):
    def __init__(self, store: AsyncStore, fail_open: bool = False) -> None:
        self.store = store
        self.fail_open = fail_open

    async def pre_call(self, call: Call) -> None:
        key = call.key
        if key.rpm is None and key.tpm is None:
            return
        try:
            usage = await self.store.hit(key.key_id, key.rpm, key.tpm)
        except RateLimited as refused:
            raise self._refusal(call, refused.usage) from None
        except StoreUnavailable as exc:
            if self.fail_open:
                log.warning("rate limit store unavailable (%s); admitting %s", exc, key.key_id)
                return
            raise service_unavailable(
                "Rate limits cannot be checked right now (the counter store is unavailable). "
                "Retry shortly."
            ) from None
        call.response_headers.update(self._headers(call, usage))

    async def post_call(self, call: Call) -> None:
        key = call.key
        if key.tpm is None or call.usage is None or call.usage.total_tokens <= 0:
            return
        tokens = call.usage.total_tokens
        for attempt in range(CHARGE_ATTEMPTS):
            try:
                await self.store.add_tokens(key.key_id, tokens)
                return
            except StoreUnavailable as exc:
                if attempt + 1 == CHARGE_ATTEMPTS:
                    # Logged with the amounts so it can be reconciled by hand.
                    log.error(
                        "token charge lost after %d attempts: key_id=%s tokens=%d model=%s error=%s",
                        CHARGE_ATTEMPTS, key.key_id, tokens, call.model_name, exc,
                    )
                    return
                await asyncio.sleep(0.05 * 2**attempt)

    def _headers(self, call: Call, usage: Usage) -> dict[str, str]:
        key = call.key
        reset = f"{max(0, usage.window_start + WINDOW_SECONDS - int(time.time()))}s"
        headers: dict[str, str] = {}
        if key.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(key.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - usage.requests))
            headers["x-ratelimit-reset-requests"] = reset
        if key.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(key.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - usage.tokens))
            headers["x-ratelimit-reset-tokens"] = reset
        return headers

    def _refusal(self, call: Call, usage: Usage) -> GatewayError:
        key = call.key
        retry_after = max(1, math.ceil(usage.window_start + WINDOW_SECONDS - time.time()))
        headers = self._headers(call, usage)
        headers["retry-after"] = str(retry_after)
        if key.rpm is not None and usage.requests >= key.rpm:
            kind, limit, used = "requests", key.rpm, usage.requests
        else:
            kind, limit, used = "tokens", key.tpm, usage.tokens
        return GatewayError(
            429,
            f"Rate limit reached for {kind} per minute on this key: limit {limit}, used {used}. "
            f"Try again in {retry_after}s.",
            type=kind,
            code="rate_limit_exceeded",
            headers=headers,
        )
