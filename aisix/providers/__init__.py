"""Upstream providers: one module per upstream API family (see `aisix.providers.base`).

``openai`` serves every OpenAI-compatible upstream (OpenAI, DeepSeek, vLLM,
Ollama, llama.cpp, ...); the others are imported only when a model uses them
(`provider_class`), so a deployment that never calls Gemini never pays for
importing it at cold start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .client import is_timeout, make_upstream_client, never_sent, upstream_failure_error
from .openai import OpenAIProvider

if TYPE_CHECKING:
    from .base import Provider

# The models file's ``provider`` value -> (module, class), imported on first use.
PROVIDER_CLASSES: dict[str, tuple[str, str]] = {
    "openai": ("openai", "OpenAIProvider"),
    "azure": ("azure", "AzureOpenAIProvider"),
    "gemini": ("gemini", "GeminiProvider"),
    "anthropic": ("anthropic", "AnthropicProvider"),
    "bedrock": ("bedrock", "BedrockProvider"),
}


def provider_class(kind: str) -> "type[Provider]":
    """The provider class for a models-file ``provider`` value, its module imported now."""
    module, name = PROVIDER_CLASSES[kind]
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "OpenAIProvider", "PROVIDER_CLASSES", "is_timeout", "make_upstream_client", "never_sent", "provider_class",
    "upstream_failure_error",
]
