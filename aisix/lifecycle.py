"""The one owner of a call: every step, in order, exactly once, whatever the route.

authenticate → read the client's request → pre_call hooks → open the upstream
→ relay the stream or complete the answer → settle (usage charged, post_call
hooks), after the client has its answer.

The route says which dialect the client speaks; the model's provider says
what the upstream speaks. When they match (an OpenAI client and an
OpenAI-compatible upstream; an Anthropic client and Anthropic) the call is
passed through (`aisix.passthrough`); otherwise it is translated through the
neutral model (`aisix.translate.bridge`). A refusal at any step is answered in
the client's dialect and still reaches post_call hooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .call import Call
from .cutoff import DEADLINE, Cutoff
from .deadline import seconds_left
from .errors import GatewayError, bad_request, upstream_timeout
from .streaming.relay import StreamRelay
from .translate.neutral import estimate_input_tokens
from .upstream import open_ok, read_answer

if TYPE_CHECKING:
    from .dialects.base import Dialect
    from .gateway import Gateway

log = logging.getLogger("aisix")

# curl -d sends form-urlencoded unless told otherwise; a JSON body under that label is accepted.
JSON_TYPES = ("application/json", "text/json", "application/x-www-form-urlencoded")


class Lifecycle:
    """Serves calls for one gateway; a route is `await lifecycle.serve(request, dialect)`."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gw = gateway

    async def serve(self, request: Request, dialect: "Dialect") -> Any:
        gw = self.gw
        call = Call(key=None, model_name="", body={}, stream=False, dialect=dialect.name)
        try:
            call.key = await gw.authenticate(dialect.credentials(request.headers))
            call.body = await read_json(request, gw.settings.max_body_bytes)
            call.model_name, call.stream = dialect.validate(call.body)
            await gw.pipeline.pre_call(call)
            bridge = gw.bridge(call, dialect, request)
        except GatewayError as exc:
            # Refused before the upstream: post_call hooks see it, nothing is charged.
            return self._refused(call, dialect, exc)
        except ClientDisconnect:
            # The client hung up while sending its body: normal traffic, not an error. The upstream
            # never saw the call, so nothing is charged; post_call hooks still see it (a 499).
            log.debug("client left while sending %s", request.url.path)
            call.client_disconnected = True
            return self._refused(call, dialect, client_closed())
        if call.stream:
            return StreamRelay(gw, call, bridge, dialect)
        try:
            seconds = seconds_left(request.scope, gw.settings.deadline_margin_seconds)
            content = await _complete_in_time(call, bridge, request.receive, seconds)
        except GatewayError as exc:
            return self._refused(call, dialect, exc, bridge.completion_chars)
        if content is None:  # the client left: nobody reads an answer
            call.status = 499
            return Settled(gw, call, error_response(dialect, client_closed()), bridge.completion_chars)
        call.status = 200
        response = Response(content, 200, call.response_headers, media_type="application/json")
        return Settled(gw, call, response, bridge.completion_chars)

    async def count_tokens(self, request: Request, dialect: "Dialect") -> Any:
        """Anthropic's ``/v1/messages/count_tokens``: the provider's own count where it has one, else
        the estimate. Free, as Anthropic's is: no rate limit is taken and nothing is charged."""
        gw = self.gw
        try:
            key = await gw.authenticate(dialect.credentials(request.headers))
            body = await read_json(request, gw.settings.max_body_bytes)
            # count_tokens takes no max_tokens; the dialect's request rules want one. The rules are
            # checked here as on /v1/messages: to_chat trusts them (no 500 for a missing 'messages').
            probe = {**body, "max_tokens": 1, "stream": False}
            model_name, _ = dialect.validate(probe)
            model = gw.config.models.get(model_name)
            call = Call(key=key, model_name=model_name, body=body, stream=False, dialect=dialect.name, model=model)
            await gw.validate_model(call)
            assert call.model is not None
            chat = dialect.to_chat(probe)
            provider = gw.providers[call.model.name]
            if "count_tokens" in provider.serves:
                upstream = provider.count_tokens_request(gw.client, chat)
                answer = await read_answer(await open_ok(gw.client, call, provider, upstream))
                tokens = provider.count_tokens_response(answer)
            else:
                tokens = estimate_input_tokens(chat)
        except GatewayError as exc:
            return error_response(dialect, exc)
        except ClientDisconnect:  # the client left mid-body: not an error, and nothing was counted
            log.debug("client left while sending %s", request.url.path)
            return error_response(dialect, client_closed())
        return Response(json.dumps({"input_tokens": tokens}), 200, media_type="application/json")

    def _refused(self, call: Call, dialect: "Dialect", error: GatewayError, chars: int = 0) -> "Settled":
        call.error, call.status = error, error.status
        return Settled(self.gw, call, error_response(dialect, error), chars)


class Settled:
    """An answer, then the call's settlement: usage charged and post_call hooks run, once.

    The client's answer never waits for a DynamoDB write. Settling still happens
    inside the ASGI call, so Mangum and the Lambda runtime (which end the
    invocation only when the app returns) wait for it, and it is shielded from
    the cancellation a disconnect or a deadline brings.
    """

    def __init__(self, gw: "Gateway", call: Call, response: Response, completion_chars: int = 0) -> None:
        self.gw = gw
        self.call = call
        self.response = response
        self.completion_chars = completion_chars

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                self.gw.settle_usage(self.call, self.completion_chars)
                await self.gw.pipeline.post_call(self.call)


def client_closed() -> GatewayError:
    """What a call whose client left is recorded as (nginx's 499); nobody reads it."""
    return GatewayError(499, "The client closed the request.", code="client_closed_request")


def error_response(dialect: "Dialect", error: GatewayError) -> Response:
    """``error`` as an HTTP answer in the client's dialect."""
    return Response(json.dumps(dialect.error_body(error)), error.status, error.headers, media_type="application/json")


async def _complete_in_time(call: Call, bridge: Any, receive: Any, seconds: float) -> bytes | None:
    """The non-streamed upstream call, cut short by whichever comes first: the client leaving
    (then None: nobody reads an answer) or the deadline (504). Cancelling closes the upstream
    connection on the way out."""
    cutoff = Cutoff(receive, seconds)
    try:
        return await bridge.complete()
    except asyncio.CancelledError:
        if not cutoff.caught():
            raise  # cancelled from outside: not ours to swallow
        if cutoff.why == DEADLINE:
            raise upstream_timeout("The gateway's time limit was reached before the upstream answered.") from None
        call.client_disconnected = True
        return None
    finally:
        cutoff.close()


async def read_json(request: Request, max_body: int) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx (415, 413, 400) saying what is wrong."""
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
        raise bad_request("The request body is empty. Send a JSON object.")
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8.") from None
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise bad_request("The request body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than this gateway accepts ({limit} bytes).", code="request_too_large"
    )
