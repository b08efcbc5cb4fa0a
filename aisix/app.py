"""The HTTP surface: a Starlette app with the OpenAI-compatible routes.

The app knows nothing of Lambda or uvicorn: `handler.py` wraps it with
Mangum for buffered invocations and `aisix.lambda_runtime` serves it for
streamed ones; locally uvicorn serves it. Middleware stays pure ASGI (none
is needed today): Starlette's BaseHTTPMiddleware would hide client
disconnects from the streaming relay.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import GatewayError, bad_request, error_body
from .gateway import Gateway
from .hooks import Call
from .relay import StreamRelay

log = logging.getLogger("aisix")

# curl -d sends form-urlencoded unless told otherwise; a JSON body under that label is accepted.
JSON_TYPES = ("application/json", "text/json", "application/x-www-form-urlencoded")


def create_app(gateway: Gateway | None = None) -> Starlette:
    """Build the app around ``gateway`` (by default configured from the environment)."""
    gw = gateway or Gateway.from_settings()
    max_body = gw.settings.max_body_bytes

    async def chat_completions(request: Request) -> Any:
        started = time.perf_counter()
        key = await gw.authenticate(request.headers.get("authorization"))
        body = await _read_json(request, max_body)
        call = Call(key=key, model_name=body["model"], body=body, stream=body.get("stream") is True)
        call.started = started
        await gw.pipeline.pre_call(call)
        if call.stream:
            return StreamRelay(gw, call)
        try:
            content = await gw.complete(call)
        except GatewayError as exc:
            call.error, call.status = exc, exc.status
            raise
        finally:
            await gw.pipeline.post_call(call)
        return Response(content, 200, call.response_headers, media_type="application/json")

    async def list_models(request: Request) -> JSONResponse:
        key = await gw.authenticate(request.headers.get("authorization"))
        data = [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in gw.config.models.values()
            if key.may_use(m.name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gw.aclose()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gw
    return app


async def _read_json(request: Request, max_body: int) -> dict[str, Any]:
    """The request body as a JSON object with valid ``model`` and ``messages``, or a 4xx."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES:
        raise GatewayError(
            415, f"Unsupported content type '{content_type}'. Send 'Content-Type: application/json'."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(max_body)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise _too_large(max_body)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("The request body is empty. Send a JSON object with 'model' and 'messages'.")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8.") from None
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter (a string).", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of messages.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(
                f"messages[{index}] must be an object with a 'role'.", param=f"messages.[{index}]"
            )
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    return body


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than this gateway accepts ({limit} bytes).", code="request_too_large"
    )


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return JSONResponse(exc.to_dict(), exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse(
        error_body(message, "invalid_request_error"), exc.status_code, headers=exc.headers
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("Internal server error.", "server_error"), 500)
