"""RateLimitHook: requests and tokens per minute, per key, shared through DynamoDB.

Before the call it takes one request from the key's quota (`aisix.quota`:
served from a local lease, refilled from the DynamoDB counters); after the
call it charges the tokens actually used, so a key over its TPM is refused
from its next call on. Windows are calendar minutes.
"""

from __future__ import annotations

import logging
import math

from ..errors import GatewayError, service_unavailable
from ..quota import Quota, View, reset_seconds
from ..store import RateLimited, StoreUnavailable
from .base import Call, Hook

log = logging.getLogger("aisix.ratelimit")


class RateLimitHook(Hook):
    def __init__(self, quota: Quota, fail_open: bool = False) -> None:
        self.quota = quota
        self.fail_open = fail_open

    async def pre_call(self, call: Call) -> None:
        key = call.key
        assert key is not None, "pre_call runs for authenticated calls only"
        if key.rpm is None and key.tpm is None:
            return
        try:
            view = await self.quota.admit(key)
        except RateLimited as refused:
            usage = refused.usage
            raise self._refusal(call, View(usage.window_start, usage.requests, usage.tokens)) from None
        except StoreUnavailable as exc:
            if self.fail_open:
                log.warning("rate limit store unavailable (%s); admitting %s unlimited", exc, key.key_id)
                return
            raise service_unavailable(
                "Rate limits cannot be checked right now (the counter store is unavailable). Retry shortly."
            ) from None
        call.response_headers.update(self._headers(call, view))

    async def post_call(self, call: Call) -> None:
        key = call.key
        if key is not None and key.tpm is not None and call.usage is not None:
            await self.quota.charge(key, call.usage.total_tokens)

    async def aclose(self) -> None:
        await self.quota.close()

    def _headers(self, call: Call, view: View) -> dict[str, str]:
        key = call.key
        reset = f"{reset_seconds(view, self.quota.clock())}s"
        headers: dict[str, str] = {}
        if key.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(key.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - view.requests))
            headers["x-ratelimit-reset-requests"] = reset
        if key.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(key.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - view.tokens))
            headers["x-ratelimit-reset-tokens"] = reset
        return headers

    def _refusal(self, call: Call, view: View) -> GatewayError:
        key = call.key
        retry_after = max(1, math.ceil(view.window + 60 - self.quota.clock()))
        headers = self._headers(call, view)
        headers["retry-after"] = str(retry_after)
        if key.rpm is not None and view.requests >= key.rpm:
            kind, limit, used = "requests", key.rpm, view.requests
        else:
            kind, limit, used = "tokens", key.tpm, view.tokens
        return GatewayError(
            429,
            f"Rate limit reached for {kind} per minute on this key: limit {limit}, used {used}. "
            f"Try again in {retry_after}s.",
            type=kind,
            code="rate_limit_exceeded",
            headers=headers,
        )
