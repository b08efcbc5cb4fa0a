"""Anthropic Messages, client and upstream alike: Claude Code and the anthropic SDK to Anthropic.

The body goes up as it came (only the model id and the key change), with the
client's ``anthropic-beta`` and ``anthropic-version`` and its query string
(Claude Code sends ``?beta=true``); the answer comes back event by event,
byte for byte, read only for its usage, its end (``message_stop``) and its
errors (`aisix.dialects.anthropic_messages.AnthropicPassthrough`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from ..dialects.anthropic_messages import AnthropicPassthrough, passthrough_usage
from ..errors import GatewayError, bad_request, upstream_error
from ..providers.base import decoded_before
from ..providers.client import upstream_failure_error
from ..streaming.relay import Write
from ..streaming.sse import SSE_HEADERS
from ..upstream import body_pieces, open_ok, read_answer, read_limited

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..call import Call
    from ..gateway import Gateway
    from ..providers.anthropic import AnthropicProvider


class AnthropicMessagesPassthrough:
    """One Anthropic Messages call relayed to Anthropic: a `StreamSource`, or `complete`."""

    headers = SSE_HEADERS

    def __init__(self, gateway: "Gateway", call: "Call", provider: "AnthropicProvider", request: "Request") -> None:
        self.client = gateway.client
        self.pipeline = gateway.pipeline
        self.call = call
        self.provider = provider
        self.client_headers = request.headers
        self.query = request.url.query
        self.response: httpx.Response | None = None
        self.completion_chars = 0

    def _request(self) -> httpx.Request:
        try:
            return self.provider.passthrough_request(self.client, self.call.body, self.client_headers, query=self.query)
        except RecursionError:
            raise bad_request("The request body is nested too deeply.") from None

    async def open(self) -> None:
        response = self.response = await open_ok(self.client, self.call, self.provider, self._request())
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await read_limited(response, 1024 * 1024)
            raise upstream_error("The upstream answered a streamed request without an event stream.")

    async def pump(self, write: Write) -> bytes:
        assert self.response is not None
        call, hooks = self.call, self.pipeline
        reader = AnthropicPassthrough(self.provider.model)
        try:
            async for raw in body_pieces(self.response):
                try:
                    frames = reader.feed(raw)
                except GatewayError as error:
                    # The frames before the upstream's error event are relayed, then the error.
                    for frame in decoded_before(error):
                        if hooks.chunk_hooks:
                            from ..translate.bridge import frame_data

                            hooks.on_chunk(call, frame_data(frame))
                        await write(frame)
                    raise
                for frame in frames:
                    if hooks.chunk_hooks:
                        from ..translate.bridge import frame_data

                        hooks.on_chunk(call, frame_data(frame))
                    await write(frame)
                    self.completion_chars = reader.output_chars
                    call.usage = reader.usage if reader.usage_final else call.usage
                if reader.done:
                    break
        except httpx.HTTPError as exc:
            raise upstream_failure_error(
                exc, "The upstream stopped sending before the answer was complete.", "The upstream stream failed"
            ) from None
        finally:
            self.completion_chars = reader.output_chars
            if reader.usage is not None and call.usage is None and reader.usage_final:
                call.usage = reader.usage
        if not reader.done:
            raise upstream_error("The upstream closed the stream before it was complete.")
        return b""

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()

    async def complete(self) -> bytes:
        body = await read_answer(await open_ok(self.client, self.call, self.provider, self._request()))
        self.call.usage = passthrough_usage(body)
        self.call.response_body = body
        return body
