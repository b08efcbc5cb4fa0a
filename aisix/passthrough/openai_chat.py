"""OpenAI chat completions, client and upstream alike (OpenAI, Azure, vLLM, Ollama, ...).

Each event's data is checked to be a JSON object (one ``raw_decode``, about a
microsecond for a typical chunk); the parsed chunk gives the usage and the
text length for the estimate, so nothing is scanned twice. The gateway asks
the upstream for a final usage chunk (``stream_options.include_usage``) and
hides it from clients that did not ask; a strict upstream that refuses the
option is asked once more without it, and remembered.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import GatewayError, bad_request, upstream_error
from ..providers.base import error_fields, in_stream_error, refusal
from ..providers.client import upstream_failure_error
from ..streaming.relay import Write
from ..streaming.sse import MAX_EVENT_BYTES, SSE_HEADERS, EventTooLarge, SSEDecoder, decode_chunk
from ..upstream import body_pieces, read_and_close, read_answer, read_limited, send
from ..usage import completion_chars, delta_chars, usage_from_dict

if TYPE_CHECKING:
    from ..call import Call
    from ..gateway import Gateway
    from ..providers.openai import OpenAIProvider

log = logging.getLogger("aisix.passthrough")

DONE = b"data: [DONE]\n\n"


class OpenAIChatPassthrough:
    """One OpenAI chat call relayed to an OpenAI-compatible upstream: a `StreamSource`, or `complete`."""

    headers = SSE_HEADERS

    def __init__(self, gateway: "Gateway", call: "Call", provider: "OpenAIProvider", request: Any = None) -> None:
        self.client = gateway.client
        self.pipeline = gateway.pipeline
        self.call = call
        self.provider = provider
        self.response: httpx.Response | None = None
        self.completion_chars = 0
        options = call.body.get("stream_options")
        self.client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    async def _open(self, stream: bool) -> httpx.Response:
        """The upstream's 200 response, or its refusal as the client's error."""
        provider, call = self.provider, self.call
        with_usage = stream and provider.accepts_stream_options
        response = await self._send(stream, with_usage)
        if response.status_code == 200:
            return response
        call.upstream_took_call = False  # refused: the upstream did no work
        body = await read_and_close(response)
        if with_usage and provider.rejects_stream_options(response.status_code, body):
            log.info("upstream of %s refuses stream_options; usage will be estimated", provider.model.name)
            provider.accepts_stream_options = False
            response = await self._send(stream, with_usage=False)
            if response.status_code == 200:
                return response
            call.upstream_took_call = False
            body = await read_and_close(response)
        raise refusal(provider.model, response.status_code, response.headers, **error_fields(body))

    async def _send(self, stream: bool, with_usage: bool) -> httpx.Response:
        try:
            request = self.provider.build_request(self.client, self.call.body, stream, with_usage)
        except RecursionError:  # parsed at the limit of the stack, one level too deep to write back
            raise bad_request("The request body is nested too deeply.") from None
        return await send(self.client, self.call, request)

    # -- streamed ------------------------------------------------------------------

    async def open(self) -> None:
        response = self.response = await self._open(stream=True)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await self._read_stray_usage(response)
            raise upstream_error("The upstream answered a streamed request without an event stream.")

    async def pump(self, write: Write) -> bytes:
        assert self.response is not None
        decoder = SSEDecoder(MAX_EVENT_BYTES)
        try:
            async for raw in body_pieces(self.response):
                for data in decoder.feed(raw):
                    if await self._event(data, write):
                        return DONE
        except EventTooLarge:
            raise upstream_error(
                f"The upstream sent an event larger than the gateway relays ({MAX_EVENT_BYTES} bytes)."
            ) from None
        except httpx.HTTPError as exc:
            raise upstream_failure_error(
                exc, "The upstream stopped sending before the answer was complete.", "The upstream stream failed"
            ) from None
        raise upstream_error("The upstream closed the stream before it was complete.")

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()

    async def _event(self, data: str, write: Write) -> bool:
        """Relay one upstream event; True once the stream is done."""
        if not data:
            return False
        if data == "[DONE]":
            return True
        call = self.call
        chunk = decode_chunk(data)
        if chunk is None:
            raise upstream_error("The upstream sent an event that is not a JSON object.")
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise in_stream_error(self.provider.model, error.get("message"), error.get("type"), error.get("code"))
        usage = chunk.get("usage")
        chars = 0
        if usage is not None:
            call.usage = usage_from_dict(usage)
            if not self.client_wants_usage and not chunk.get("choices"):
                return False  # the usage chunk the gateway asked for, hidden from this client
        else:
            chars = delta_chars(chunk)
        if self.pipeline.chunk_hooks:
            self.pipeline.on_chunk(call, data)
        if "\n" in data:  # multi-line data keeps one "data:" field per line
            data = data.replace("\n", "\ndata: ")
        await write(b"data: " + data.encode() + b"\n\n")
        self.completion_chars += chars  # relayed: charged if the upstream reports no usage
        return False

    async def _read_stray_usage(self, response: httpx.Response, limit: int = 1024 * 1024) -> None:
        """Read what an upstream sent instead of an event stream, for the usage it reports."""
        try:
            parsed = json.loads(await read_limited(response, limit))
        except (GatewayError, ValueError, RecursionError, UnicodeDecodeError):
            return
        if isinstance(parsed, dict):
            self.call.usage = usage_from_dict(parsed.get("usage"))

    # -- complete --------------------------------------------------------------------

    async def complete(self) -> bytes:
        """A non-streamed call: the upstream's JSON body, as it came, with usage recorded."""
        call = self.call
        body = await read_answer(await self._open(stream=False))
        try:
            parsed: Any = json.loads(body)
        except (ValueError, RecursionError):
            raise upstream_error("The upstream answered with something that is not JSON.") from None
        if not isinstance(parsed, dict):
            raise upstream_error("The upstream answered with something that is not a chat completion.")
        call.response_body = body
        call.usage = usage_from_dict(parsed.get("usage"))
        self.completion_chars = completion_chars(parsed)
        return body
