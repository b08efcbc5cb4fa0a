"""Upstream providers: how a chat completion call becomes an upstream HTTP request.

One module per provider family. Today every upstream speaks OpenAI's
``/chat/completions`` (OpenAI, DeepSeek, vLLM, Ollama, llama.cpp, ...).
"""

from .client import is_timeout, make_upstream_client, never_sent, upstream_failure_error
from .openai import OpenAIProvider

__all__ = ["OpenAIProvider", "is_timeout", "make_upstream_client", "never_sent", "upstream_failure_error"]
