"""Client dialects: what each kind of client speaks (see `aisix.dialects.base`).

One module per protocol, imported only when a route first needs it (a Lambda
cold start pays for none it does not serve): `load` maps a dialect's name to
its class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Dialect

# name -> (module, class); the lead wires the routes and adds the other dialects here.
DIALECTS: dict[str, tuple[str, str]] = {
    "openai_chat": ("aisix.dialects.openai_chat", "OpenAIChatDialect"),
    "openai_responses": ("aisix.dialects.openai_responses", "OpenAIResponsesDialect"),
    "openai_embeddings": ("aisix.dialects.openai_embeddings", "OpenAIEmbeddingsDialect"),
    "anthropic_messages": ("aisix.dialects.anthropic_messages", "AnthropicMessagesDialect"),
}


def load(name: str) -> "Dialect":
    """A new instance of the dialect ``name`` (its module imported on first use)."""
    module, cls = DIALECTS[name]
    return getattr(importlib.import_module(module), cls)()
