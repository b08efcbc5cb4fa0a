"""The gateway: everything built once per process, and the steps of one call.

`Gateway` owns the long-lived parts (models, the pooled upstream client, the
DynamoDB store, the key cache, the hook pipeline) and the two steps every
call takes whatever the transport: authenticate the key, and open the
upstream call. The HTTP surface is in `aisix.app`, the streaming relay in
`aisix.relay`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import httpx

from .auth import KeyCache, bearer_token
from .config import GatewayConfig, Settings, load_config
from .errors import GatewayError, bad_request, service_unavailable, upstream_error
from .hooks import Call, Hook, Pipeline, RateLimitHook, ValidateModelHook, load_hook
from .quota import Quota
from .secrets import resolve_secrets
from .providers import OpenAIProvider, make_upstream_client, never_sent, upstream_failure_error
from .providers.sent import reporting_sent
from .store import AsyncStore, KeyRecord, Store, StoreUnavailable, make_client
from .call import TokenUsage
from .usage import completion_chars, estimate_prompt_tokens, estimate_tokens, usage_from_dict

log = logging.getLogger("aisix")

# A non-streamed answer is held in memory to read its usage: beyond this it is refused (502).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


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
                Quota(store, settings.token_flush_seconds, background=not settings.on_lambda),
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
        client = make_client(
            settings.dynamodb_endpoint, settings.region,
            timeout=settings.dynamodb_timeout_seconds, attempts=settings.dynamodb_max_attempts,
        )
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
        call.upstream_took_call = False  # refused: the upstream did no work
        body = await _read_and_close(response)
        if with_usage and provider.rejects_stream_options(response.status_code, body):
            log.info("upstream of %s refuses stream_options; usage will be estimated", call.model.name)
            provider.accepts_stream_options = False
            response = await self._send(provider, call, stream, with_usage=False)
            if response.status_code == 200:
                return response
            call.upstream_took_call = False
            body = await _read_and_close(response)
        raise upstream_failure(provider, response.status_code, response.headers, body)

    async def _send(
        self, provider: OpenAIProvider, call: Call, stream: bool, with_usage: bool
    ) -> httpx.Response:
        try:
            request = provider.build_request(self.client, call.body, stream, with_usage)
        except RecursionError:  # parsed at the limit of the stack, one level too deep to write back
            raise bad_request("The request body is nested too deeply.") from None
        # Set by the transport the moment the request has left (`reporting_sent`): from
        # then on a client that leaves while the upstream thinks is charged; before it
        # (cancelled while connecting) nothing is.
        call.upstream_took_call = False
        try:
            with reporting_sent(functools.partial(setattr, call, "upstream_took_call", True)):
                response = await self.client.send(request, stream=True)
            call.upstream_took_call = True  # it answered: it saw the call
            return response
        except httpx.HTTPError as exc:
            if never_sent(exc):
                call.upstream_took_call = False
            raise upstream_failure_error(
                exc,
                f"The upstream for '{call.model_name}' did not answer in time.",
                f"The upstream for '{call.model_name}' could not be reached",
            ) from None

    async def complete(self, call: Call) -> bytes:
        """A non-streamed call: the upstream's JSON body, as it came, with usage recorded."""
        response = await self.open_upstream(call, stream=False)
        try:
            body = await read_limited(response, MAX_ANSWER_BYTES)
        except httpx.HTTPError as exc:
            raise upstream_failure_error(
                exc, "The upstream did not finish its answer in time.", "The upstream answer was cut off"
            ) from None
        finally:
            await response.aclose()
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            raise upstream_error("The upstream answered with something that is not JSON.") from None
        if not isinstance(parsed, dict):
            raise upstream_error("The upstream answered with something that is not a chat completion.")
        call.status = 200
        call.response_body = body
        call.usage = usage_from_dict(parsed.get("usage"))
        self.settle_usage(call, completion_chars(parsed))
        return body

    def settle_usage(self, call: Call, completion_chars: int = 0) -> None:
        """Give ``call`` its usage if the upstream reported none: what the call really used.

        A call the upstream took (it answered 200, or it was cut off, timed out
        or abandoned by the client after the request left) is charged the
        estimated prompt plus the ``completion_chars`` relayed so far; a call
        the upstream never saw (no connection) or refused (an error status)
        is charged nothing.
        """
        if call.usage is not None or not call.upstream_took_call:
            return
        prompt = estimate_prompt_tokens(call.body)
        completion = estimate_tokens(completion_chars)
        call.usage = TokenUsage(prompt, completion, prompt + completion)
        call.usage_estimated = True

    async def read_stray_usage(self, call: Call, response: httpx.Response, limit: int = 1024 * 1024) -> None:
        """Read what an upstream sent instead of an event stream, for the usage it reports."""
        try:
            body = await read_limited(response, limit)
            parsed = json.loads(body)
        except (httpx.HTTPError, ValueError, RecursionError, UnicodeDecodeError):
            return
        if isinstance(parsed, dict):
            call.usage = usage_from_dict(parsed.get("usage"))

    def upstream_error_event(self, call: Call, chunk: dict[str, Any]) -> GatewayError:
        """An ``{"error": ...}`` event the upstream sent mid-stream, as a well-formed OpenAI error."""
        assert call.model is not None
        error = chunk.get("error")
        return _error_from_upstream(
            self.providers[call.model.name], 502, error if isinstance(error, dict) else {},
            default_type="api_error", default_code="upstream_error",
        )


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The response body, or `upstream_error` (502) once it passes ``limit`` bytes."""
    pieces: list[bytes] = []
    size = 0
    async for piece in response.aiter_bytes():
        size += len(piece)
        if size > limit:
            raise upstream_error(f"The upstream's answer is larger than the gateway relays ({limit} bytes).")
        pieces.append(piece)
    return b"".join(pieces)


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
    except (ValueError, RecursionError):
        pass
    passthrough_headers = {}
    if status == 429 and "retry-after" in headers:
        passthrough_headers["retry-after"] = headers["retry-after"]
    return _error_from_upstream(
        provider, status, error, headers=passthrough_headers,
        default_type="rate_limit_error" if status == 429 else "invalid_request_error",
    )


def _error_from_upstream(
    provider: OpenAIProvider,
    status: int,
    error: dict[str, Any],
    *,
    default_type: str,
    default_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> GatewayError:
    """The upstream's own error fields, redacted of the upstream key, in OpenAI's four-key shape."""
    name = provider.model.name
    message = str(error.get("message") or f"The upstream for '{name}' refused the request (HTTP {status}).")
    key = provider.model.api_key
    if key:
        message = message.replace(key, "[redacted]")
    return GatewayError(
        status,
        message,
        type=str(error.get("type") or default_type),
        param=error.get("param") if isinstance(error.get("param"), str) else None,
        code=str(error["code"]) if error.get("code") is not None else default_code,
        headers=headers,
    )
