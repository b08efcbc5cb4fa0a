"""OpenAI-compatible upstreams: ``POST {base_url}/chat/completions``."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..config import ModelConfig


class OpenAIProvider:
    """Builds upstream requests for one model; everything fixed is computed once."""

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.url = model.chat_url
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        self.stream_headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if model.api_key:
            self.headers["authorization"] = self.stream_headers["authorization"] = (
                f"Bearer {model.api_key}"
            )
        self.timeout = httpx.Timeout(model.timeout, connect=min(model.timeout, 10.0))
        # Cleared, for this process, when the upstream refuses stream_options.
        self.accepts_stream_options = True

    def build_request(
        self, client: httpx.AsyncClient, body: dict[str, Any], stream: bool, with_usage: bool
    ) -> httpx.Request:
        """The upstream request: the client's body with the upstream model name.

        Unknown fields pass through untouched. For a stream, ``with_usage`` asks
        the upstream for a final usage chunk (``stream_options.include_usage``).
        """
        upstream_body = dict(body)
        upstream_body["model"] = self.model.model
        if stream and with_usage:
            options = upstream_body.get("stream_options")
            upstream_body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return client.build_request(
            "POST",
            self.url,
            content=json.dumps(upstream_body, separators=(",", ":")).encode(),
            headers=self.stream_headers if stream else self.headers,
            timeout=self.timeout,
        )

    @staticmethod
    def rejects_stream_options(status: int, body: bytes) -> bool:
        """Whether an upstream 400 is a strict server refusing ``stream_options``."""
        return status in (400, 422) and b"stream_options" in body
