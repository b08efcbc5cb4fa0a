"""The gateway: everything built once per process, and the steps of one call.

`Gateway` owns the long-lived parts (models, the pooled upstream client, the
DynamoDB store, the key cache, the hook pipeline) and the two steps every
call takes whatever the transport: authenticate the key, and open the
upstream call. The HTTP surface is in `aisix.app`, the streaming relay in
`aisix.relay`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from .auth import KeyCache, bearer_token
from .config import GatewayConfig, Settings, load_config
from .errors import GatewayError, service_unavailable, upstream_error, upstream_timeout
from .hooks import Call, Hook, Pipeline, RateLimitHook, ValidateModelHook, load_hook
from .quota import Quota
from .secrets import resolve_secrets
from .providers import OpenAIProvider, is_timeout, make_upstream_client
from .store import AsyncStore, KeyRecord, Store, StoreUnavailable, make_client
from .usage import completion_chars, estimate_prompt_tokens, estimate_tokens, usage_from_dict
from .hooks.base import TokenUsage

log = logging.getLogger("aisix")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        config: GatewayConfig,
        store: AsyncStore,
        client: httpx.AsyncClient | None = None,
        hooks: list[Hook] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.client = client or make_upstream_client(
            settings.upstream_transport, settings.upstream_max_connections
        )
        self.providers = {name: OpenAIProvider(model) for name, model in config.models.items()}
        self.keys = KeyCache(store.get_key, settings.key_cache_seconds)
        builtin: list[Hook] = [
            ValidateModelHook(config.models),
            RateLimitHook(
                Quota(store, settings.token_flush_seconds),
                fail_open=settings.rate_limit_on_store_error == "open",
            ),
        ]
        user_hooks = hooks if hooks is not None else [load_hook(path) for path in config.hooks]
        self.pipeline = Pipeline(builtin + user_hooks)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Gateway":
        settings = settings or Settings.from_env()
        resolve_secrets()
        config = load_config(settings.config_path)
        client = make_client(settings.dynamodb_endpoint, settings.region)
        store = Store(client, settings.keys_table, settings.counters_table)
        return cls(settings, config, AsyncStore(store))

    async def aclose(self) -> None:
        await self.pipeline.aclose()
        await self.client.aclose()
        self.store.close()

    async def authenticate(self, authorization: str | None) -> KeyRecord:
        secret = bearer_token(authorization)
        try:
            return await self.keys.authenticate(secret)
        except StoreUnavailable:
            # Fail closed: no key store, no calls.
            raise service_unavailable(
                "API keys cannot be checked right now (the key store is unavailable). Retry shortly."
            ) from None

    async def open_upstream(self, call: Call, stream: bool) -> httpx.Response:
        """Send the call upstream; return the response once its status is 200, else raise.

        A strict upstream that refuses ``stream_options`` is asked once more
        without it, and remembered, so later calls skip the refused attempt.
        """
        assert call.model is not None, "ValidateModelHook resolves the model first"
        provider = self.providers[call.model.name]
        with_usage = stream and provider.accepts_stream_options
        call.response_headers["x-aisix-overhead-ms"] = f"{(time.perf_counter() - call.started) * 1000:.2f}"
        response = await self._send(provider, call, stream, with_usage)
        if response.status_code == 200:
            return response
        body = await _read_and_close(response)
        if with_usage and provider.rejects_stream_options(response.status_code, body):
            log.info("upstream of %s refuses stream_options; usage will be estimated", call.model.name)
            provider.accepts_stream_options = False
            response = await self._send(provider, call, stream, with_usage=False)
            if response.status_code == 200:
                return response
            body = await _read_and_close(response)
        raise upstream_failure(provider, response.status_code, response.headers, body)

    async def _send(
        self, provider: OpenAIProvider, call: Call, stream: bool, with_usage: bool
    ) -> httpx.Response:
        request = provider.build_request(self.client, call.body, stream, with_usage)
        try:
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            if is_timeout(exc):
                raise upstream_timeout(f"The upstream for '{call.model_name}' did not answer in time.") from None
            raise upstream_error(
                f"The upstream for '{call.model_name}' could not be reached ({type(exc).__name__})."
            ) from None

    async def complete(self, call: Call) -> bytes:
        """A non-streamed call: the upstream's JSON body, as it came, with usage recorded."""
        response = await self.open_upstream(call, stream=False)
        try:
            body = await response.aread()
        except httpx.HTTPError as exc:
            if is_timeout(exc):
                raise upstream_timeout("The upstream did not finish its answer in time.") from None
            raise upstream_error(f"The upstream answer was cut off ({type(exc).__name__}).") from None
        finally:
            await response.aclose()
        try:
            parsed = json.loads(body)
        except ValueError:
            raise upstream_error("The upstream answered with something that is not JSON.") from None
        if not isinstance(parsed, dict):
            raise upstream_error("The upstream answered with something that is not a chat completion.")
        call.status = 200
        call.response_body = body
        call.usage = usage_from_dict(parsed.get("usage"))
        if call.usage is None:
            prompt = estimate_prompt_tokens(call.body)
            completion = estimate_tokens(completion_chars(parsed))
            call.usage = TokenUsage(prompt, completion, prompt + completion)
            call.usage_estimated = True
        return body


async def _read_and_close(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


def upstream_failure(
    provider: OpenAIProvider, status: int, headers: httpx.Headers, body: bytes
) -> GatewayError:
    """Turn an upstream refusal into the client's error, never leaking the upstream key.

    4xx (the request's own fault) keep their status and OpenAI error fields;
    401/403 mean the gateway's upstream credentials are wrong, which is not
    the client's fault: 502. 5xx become 502. 429 keeps ``Retry-After``.
    """
    name = provider.model.name
    if status in (401, 403):
        return upstream_error(f"The upstream for '{name}' refused the gateway's credentials.")
    if status < 400 or status >= 500:
        return upstream_error(f"The upstream for '{name}' failed with HTTP {status}.")
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except ValueError:
        pass
    message = str(error.get("message") or f"The upstream for '{name}' refused the request (HTTP {status}).")
    if provider.model.api_key:
        message = message.replace(provider.model.api_key, "[redacted]")
    passthrough_headers = {}
    if status == 429 and "retry-after" in headers:
        passthrough_headers["retry-after"] = headers["retry-after"]
    return GatewayError(
        status,
        message,
        type=str(error.get("type") or ("rate_limit_error" if status == 429 else "invalid_request_error")),
        param=error.get("param") if isinstance(error.get("param"), str) else None,
        code=str(error["code"]) if error.get("code") is not None else None,
        headers=passthrough_headers,
    )
