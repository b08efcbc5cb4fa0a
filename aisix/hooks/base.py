"""The hook interface and the pipeline that runs it around every call.

A hook is a class with up to three methods, each optional:

``async pre_call(call)``
    Runs in order before the upstream call. Raise `aisix.errors.GatewayError`
    to refuse the call; add to ``call.response_headers`` to answer with more
    headers.
``on_chunk(call, data)``
    Streaming only: runs for each event relayed to the client, with the
    event's ``data`` text as the upstream sent it. Synchronous and on the hot
    path: keep it to a few microseconds.
``async post_call(call)``
    Runs once after every call, streamed or not, whether it succeeded, failed,
    was refused (401, 403, 404, 429, a hook's own refusal) or was cut off by
    the client, after the client has its answer: ``call.usage`` holds the
    tokens used (real or, with ``call.usage_estimated``, estimated; None when
    the upstream never saw the call), ``call.error`` the failure if any.
    ``call.key`` is None when the key itself was refused (401). Exceptions
    here are logged, never sent to the client.

The pipeline notes once, at start, which hooks define which method, so a
hook that has no ``on_chunk`` costs nothing per chunk.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable


from ..call import Call, TokenUsage
from ..config import ConfigError

__all__ = ["Call", "Hook", "Pipeline", "TokenUsage", "load_hook"]

log = logging.getLogger("aisix.hooks")


class Hook:
    """Base class for hooks; override only what you need."""

    async def pre_call(self, call: Call) -> None:
        pass

    def on_chunk(self, call: Call, data: str) -> None:
        pass

    async def post_call(self, call: Call) -> None:
        pass

    async def aclose(self) -> None:
        """Release what the hook holds (clients, pending writes) when the gateway stops."""


class Pipeline:
    """Runs hooks in order; knows which hooks take part in which phase."""

    def __init__(self, hooks: Iterable[Hook]) -> None:
        self.hooks = tuple(hooks)
        self._pre = tuple(h for h in self.hooks if _overrides(h, "pre_call"))
        self.chunk_hooks = tuple(h for h in self.hooks if _overrides(h, "on_chunk"))
        self._post = tuple(h for h in self.hooks if _overrides(h, "post_call"))

    async def pre_call(self, call: Call) -> None:
        for hook in self._pre:
            await hook.pre_call(call)

    def on_chunk(self, call: Call, data: str) -> None:
        for hook in self.chunk_hooks:
            hook.on_chunk(call, data)

    async def post_call(self, call: Call) -> None:
        for hook in self._post:
            try:
                await hook.post_call(call)
            except Exception:
                log.exception("post_call hook %s failed", type(hook).__name__)


    async def aclose(self) -> None:
        for hook in self.hooks:
            try:
                await hook.aclose()
            except Exception:
                log.exception("closing hook %s failed", type(hook).__name__)


def _overrides(hook: Hook, method: str) -> bool:
    return getattr(type(hook), method, None) is not getattr(Hook, method)


def load_hook(path: str) -> Hook:
    """Instantiate a hook from ``package.module:ClassName`` (called with no arguments)."""
    module_name, _, attr = path.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"hooks: cannot load hook {path!r}: {exc}") from None
    hook = target() if callable(target) else target
    if not isinstance(hook, Hook):
        raise ConfigError(f"hooks: hook {path!r} must subclass aisix.hooks.Hook")
    return hook
