"""OpenAI-style errors: one exception type for the whole gateway, one body shape.

Every refusal the gateway makes, before or during a stream, is a `GatewayError`.
Its body always carries all four keys OpenAI clients look for:
``{"error": {"message", "type", "param", "code"}}``, null where empty.
"""

from __future__ import annotations

import json
from typing import Any, Mapping


class GatewayError(Exception):
    """A refusal with an HTTP status and an OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    def to_sse(self) -> bytes:
        """The error as one SSE event, for failures after a stream has started."""
        return b"data: " + self.to_json() + b"\n\n"


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# The refusals the gateway makes in more than one place, named once.


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def upstream_error(message: str, status: int = 502, code: str = "upstream_error") -> GatewayError:
    return GatewayError(status, message, type="api_error", code=code)


def upstream_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, type="api_error", code="upstream_timeout")


def service_unavailable(message: str) -> GatewayError:
    return GatewayError(503, message, type="server_error", code="service_unavailable")


def internal_error() -> GatewayError:
    return GatewayError(500, "Internal server error.", type="server_error")
