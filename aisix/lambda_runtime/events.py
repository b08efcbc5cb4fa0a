"""Event → ASGI request, by way of Mangum's own event handlers.

Mangum already knows every HTTP event shape (function URL / HTTP API payload 2.0,
REST API v1, ALB, Lambda@Edge); reusing its handlers keeps the scope identical to
the buffered `handler.py` entry. This module adds only what streaming needs: the
decision to stream, and the deadline in the scope.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from mangum.adapter import DEFAULT_TEXT_MIME_TYPES, HANDLERS
from mangum.handlers import APIGateway, HTTPGateway
from mangum.types import LambdaConfig, LambdaHandler, Scope

from .runtime_api import Invocation

CONFIG: LambdaConfig = {
    "api_gateway_base_path": "/",
    "text_mime_types": [*DEFAULT_TEXT_MIME_TYPES],
    "exclude_headers": [],
}


class UnsupportedEvent(Exception):
    """The event is not an HTTP request this runtime can serve."""


class LambdaContext:
    """The `context` handlers written for the managed Python runtime expect."""

    def __init__(self, invocation: Invocation) -> None:
        env = os.environ
        self.aws_request_id = invocation.request_id
        self.invoked_function_arn = invocation.invoked_function_arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0)
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = _json_or_none(invocation.cognito_identity)
        self.client_context = _json_or_none(invocation.client_context)
        self.deadline_ms = invocation.deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self.deadline_ms - int(time.time() * 1000), 0)


@dataclass
class HTTPRequest:
    scope: Scope
    body: bytes
    handler: LambdaHandler  # formats a buffered result exactly as Mangum does
    streaming: bool


def to_request(invocation: Invocation, *, stream_rest_api: bool) -> HTTPRequest:
    """Build the ASGI scope and body for an invocation, and decide whether to stream it.

    Function URL events stream (the URL must use InvokeMode RESPONSE_STREAM); REST API
    events stream only when the integration uses response transfer mode STREAM, which
    the event cannot tell us, hence `stream_rest_api`. Everything else is buffered.
    """
    try:
        event = json.loads(invocation.event)
    except ValueError as exc:
        raise UnsupportedEvent(f"event is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise UnsupportedEvent("event is not a JSON object")
    context = LambdaContext(invocation)
    for handler_cls in HANDLERS:
        if handler_cls.infer(event, context, CONFIG):
            handler = handler_cls(event, context, CONFIG)
            break
    else:
        raise UnsupportedEvent("not an HTTP event (function URL, API Gateway, ALB or Lambda@Edge)")

    scope = handler.scope
    scope["extensions"] = {"aws.lambda": {"request_id": invocation.request_id, "deadline_ms": invocation.deadline_ms}}
    streaming = _streams(handler, event, stream_rest_api)
    if streaming:
        # ASGI's HTTP trailers extension: an app may end a stream with Lambda's error
        # trailers (see cycle.StreamingCycle.send).
        scope["extensions"]["http.response.trailers"] = {}
    return HTTPRequest(scope, handler.body, handler, streaming)


def _streams(handler: LambdaHandler, event: dict[str, Any], stream_rest_api: bool) -> bool:
    if isinstance(handler, HTTPGateway):
        domain = (event.get("requestContext") or {}).get("domainName") or ""
        return event.get("version") == "2.0" and ".lambda-url." in domain
    if isinstance(handler, APIGateway):
        return stream_rest_api
    return False


def _json_or_none(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None
