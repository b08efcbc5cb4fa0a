"""The HTTP surface: a Starlette app whose routes each name the dialect they speak.

The app knows nothing of Lambda or uvicorn: `handler.py` wraps it with
Mangum for buffered invocations and `aisix.lambda_runtime` serves it for
streamed ones; locally uvicorn serves it. A call's steps are in
`aisix.lifecycle`, one owner for every route. Middleware stays pure ASGI:
Starlette's BaseHTTPMiddleware would hide client disconnects from the
streaming relay.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .dialects import load as load_dialect
from .dialects.base import Dialect
from .errors import GatewayError, error_body
from .gateway import Gateway
from .lifecycle import Lifecycle, error_response
from .openapi import openapi_document
from .overload import Capacity, OverloadGuard

log = logging.getLogger("aisix")

# Request headers, names and values together: an OpenAI client sends well under 2 KiB.
MAX_HEADER_BYTES = 32 * 1024



@functools.cache
def dialect(name: str) -> Dialect:
    """The dialect ``name``, its module imported when a route first needs it (not at cold start)."""
    return load_dialect(name)


def create_app(gateway: Gateway | None = None) -> Starlette:
    """Build the app around ``gateway`` (by default configured from the environment)."""
    gw = gateway or Gateway.from_settings()
    lifecycle = Lifecycle(gw)

    def serving(name: str) -> Any:
        async def endpoint(request: Request) -> Any:
            return await lifecycle.serve(request, dialect(name))

        return _guarded(endpoint, name)

    async def count_tokens(request: Request) -> Any:
        return await lifecycle.count_tokens(request, dialect("anthropic_messages"))

    async def list_models(request: Request) -> JSONResponse:
        key = await gw.authenticate(dialect("openai_chat").credentials(request.headers))
        data = [_model_object(m) for m in gw.config.models.values() if key.may_use(m.name)]
        return JSONResponse({"object": "list", "data": data})

    async def retrieve_model(request: Request) -> JSONResponse:
        key = await gw.authenticate(dialect("openai_chat").credentials(request.headers))
        model = gw.config.models.get(request.path_params["model"])
        if model is None or not key.may_use(model.name):
            raise GatewayError(
                404, f"The model '{request.path_params['model']}' does not exist or you do not have access to it.",
                param="model", code="model_not_found",
            )
        return JSONResponse(_model_object(model))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    openapi = json.dumps(openapi_document()).encode()

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gw.aclose()

    # Past its capacity the process answers new calls with a prompt 503 (aisix/overload.py).
    capacity = Capacity(gw.settings.max_open_calls)
    guard = [Middleware(OverloadGuard, capacity=capacity, refusal=_refusal)] if capacity.limit else []
    chat, responses = serving("openai_chat"), serving("openai_responses")
    embeddings, messages = serving("openai_embeddings"), serving("anthropic_messages")
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/responses", responses, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/embeddings", embeddings, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", _guarded(count_tokens, "anthropic_messages"), methods=["POST"]),
            Route("/v1/models", _guarded(list_models, "openai_chat"), methods=["GET"]),
            Route("/models", _guarded(list_models, "openai_chat"), methods=["GET"]),
            Route("/v1/models/{model:path}", _guarded(retrieve_model, "openai_chat"), methods=["GET"]),
            Route("/models/{model:path}", _guarded(retrieve_model, "openai_chat"), methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        middleware=[*guard, Middleware(HeaderLimit, limit=MAX_HEADER_BYTES)],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gw
    app.state.capacity = capacity
    return app


def _model_object(model: Any) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": model.owned_by}


def _dialect_for(path: str) -> Dialect:
    """The dialect of a path that has no route (or a refused method): Anthropic's under /v1/messages."""
    return dialect("anthropic_messages" if path.startswith("/v1/messages") else "openai_chat")


class HeaderLimit:
    """Pure ASGI: refuse requests whose headers pass ``limit`` bytes (431) before any work is done.

    uvicorn's httptools parser accepts headers of any size, so the check
    cannot save the server the bytes; it keeps them out of the gateway (a
    megabyte "key" is never hashed, looked up or logged).
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = 0
            for name, value in scope["headers"]:
                size += len(name) + len(value)
            if size > self.limit:
                error = GatewayError(
                    431, f"The request headers are larger than this gateway accepts ({self.limit} bytes).",
                    code="request_headers_too_large",
                )
                await error_response(_dialect_for(scope["path"]), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refusal(scope: dict[str, Any], error: GatewayError) -> Response:
    """``error`` answered in the dialect of the path (an Anthropic client gets Anthropic's shape)."""
    return error_response(_dialect_for(scope["path"]), error)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(_dialect_for(request.url.path), exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    error = GatewayError(exc.status_code, message, headers=exc.headers)
    return error_response(_dialect_for(request.url.path), error)


def _guarded(endpoint: Any, dialect_name: str) -> Any:
    """The endpoint, with an unexpected exception answered as a logged 500 right there.

    Left to Starlette's last-resort handler, the exception would be re-raised
    after the answer, logged twice, and the server would drop the client's
    keep-alive connection.
    """

    async def guarded(request: Request) -> Any:
        try:
            return await endpoint(request)
        except (GatewayError, HTTPException):
            raise
        except Exception as exc:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(dialect(dialect_name), GatewayError(500, "Internal server error.", type="server_error"))

    return guarded


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("Internal server error.", "server_error"), 500)
