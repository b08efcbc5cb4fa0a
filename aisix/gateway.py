"""The gateway: everything built once per process.

`Gateway` owns the long-lived parts (models and their providers, the pooled
upstream client, the DynamoDB store, the key cache, the hook pipeline) and
the two things every call asks of them: who is calling (`authenticate`),
and how its upstream call is made (`bridge`). The steps of a call are in
`aisix.lifecycle`; the HTTP surface is in `aisix.app`.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import TYPE_CHECKING, Any

import httpx

from .auth import KeyCache
from .call import Call, TokenUsage
from .config import GatewayConfig, ModelConfig, Settings, load_config
from .errors import bad_request, service_unavailable
from .hooks import Hook, Pipeline, RateLimitHook, ValidateModelHook, load_hook
from .providers import provider_class
from .providers.client import make_upstream_client
from .quota import Quota
from .secrets import resolve_secrets
from .store import AsyncStore, KeyRecord, Store, StoreUnavailable, make_client
from .usage import estimate_prompt_tokens, estimate_tokens

if TYPE_CHECKING:
    from .dialects.base import Dialect
    from .providers.base import Provider

log = logging.getLogger("aisix")

# Client dialect → its pass-through, for a provider that speaks it natively.
PASSTHROUGH_CLASSES = {
    "openai_chat": "aisix.passthrough.openai_chat:OpenAIChatPassthrough",
    "openai_embeddings": "aisix.passthrough.openai_embeddings:OpenAIEmbeddingsPassthrough",
    "anthropic_messages": "aisix.passthrough.anthropic_messages:AnthropicMessagesPassthrough",
}
_NEEDS = {"chat": "chat completions", "embeddings": "embeddings", "count_tokens": "token counting"}


@functools.cache
def _load(target: str) -> Any:
    """``module:attr``, imported on first use and remembered (a call looks it up once per process)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def make_provider(model: ModelConfig) -> "Provider":
    return provider_class(model.provider)(model)


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
        self.providers = {name: make_provider(model) for name, model in config.models.items()}
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

    async def authenticate(self, secret: str) -> KeyRecord:
        """The key record for the presented ``secret`` (the dialect found it), or a 401/503."""
        try:
            return await self.keys.authenticate(secret)
        except StoreUnavailable:
            # Fail closed: no key store, no calls.
            raise service_unavailable(
                "API keys cannot be checked right now (the key store is unavailable). Retry shortly."
            ) from None

    async def validate_model(self, call: Call) -> None:
        """The model exists and the key may use it (ValidateModelHook alone, for calls without limits)."""
        await self.pipeline.hooks[0].pre_call(call)

    def bridge(self, call: Call, dialect: "Dialect", request: Any = None) -> Any:
        """How this call reaches its upstream: passed through when the provider speaks the
        client's dialect, else translated. A provider that cannot serve it at all is a 400.
        ``request`` is the client's (a pass-through forwards some of its headers)."""
        assert call.model is not None, "ValidateModelHook resolves the model first"
        provider = self.providers[call.model.name]
        if dialect.needs not in provider.serves:
            raise bad_request(
                f"The model '{call.model.name}' does not serve {_NEEDS[dialect.needs]}.",
                param="model", code="unsupported_model",
            )
        if dialect.name in provider.native_dialects:
            return _load(PASSTHROUGH_CLASSES[dialect.name])(self, call, provider, request)
        from .translate.bridge import TranslatedCall

        return TranslatedCall(self, call, provider, dialect)

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
