"""One call through the gateway: what every step records, and what hooks may read.

Neutral: the same `Call` whatever protocol the client spoke and whatever
upstream served it. Its fields are typed; ``state`` is left for user hooks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ModelConfig
    from .errors import GatewayError
    from .store import KeyRecord


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens a call used. ``prompt_tokens`` includes cached ones; the detail fields are 0 when not reported."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0  # prompt tokens read from the provider's cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic, Bedrock)
    reasoning_tokens: int = 0  # completion tokens spent thinking


@dataclass(slots=True, eq=False)
class Call:
    """Everything hooks may know about one call."""

    key: "KeyRecord | None"  # None until authenticated (and for a refused key)
    model_name: str
    body: dict[str, Any]
    stream: bool
    dialect: str = "openai_chat"  # what the client speaks (see aisix/dialects)
    model: "ModelConfig | None" = None
    response_headers: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # free for user hooks
    usage: TokenUsage | None = None
    usage_estimated: bool = False
    error: "GatewayError | None" = None
    status: int = 0
    response_body: bytes | None = None
    started: float = field(default_factory=time.perf_counter)
    # True once the upstream has (or may have) taken the call, so it is charged; False
    # while it certainly never saw it (no request left) or refused it (an error status).
    upstream_took_call: bool = False
    client_disconnected: bool = False
