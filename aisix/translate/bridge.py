"""A call whose client and upstream speak different protocols, joined through the neutral model.

The dialect turns the client's request into a neutral `ChatRequest` (or
`EmbeddingsRequest`); the provider builds its upstream request from it, and
turns the answer (or each piece of a stream) back into neutral values, which
the dialect writes in the client's protocol. Nothing here knows any protocol.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import GatewayError, upstream_error
from ..providers.base import decoded_before
from ..providers.client import upstream_failure_error
from ..streaming.relay import Write
from ..streaming.sse import SSE_HEADERS, EventTooLarge
from ..upstream import body_pieces, open_ok, read_answer, read_limited
from .neutral import TextDelta, UsageReport

if TYPE_CHECKING:
    from ..call import Call
    from ..dialects.base import Dialect
    from ..gateway import Gateway
    from ..providers.base import Provider

log = logging.getLogger("aisix.translate")


class TranslatedCall:
    """One translated call: a `StreamSource` for the relay, or `complete` for a whole answer."""

    headers = SSE_HEADERS

    def __init__(self, gateway: "Gateway", call: "Call", provider: "Provider", dialect: "Dialect") -> None:
        self.client = gateway.client
        self.pipeline = gateway.pipeline
        self.call = call
        self.provider = provider
        self.dialect = dialect
        self.response: httpx.Response | None = None
        self.completion_chars = 0
        # Translated up front: what cannot be carried is a 400 before anything is sent.
        if dialect.needs == "embeddings":
            self.embeddings = dialect.to_embeddings(call.body)
        else:
            self.chat = dialect.to_chat(call.body)

    def _log_notes(self) -> None:
        """One line per translated call naming what the dialect and the provider dropped or mapped."""
        notes = self.chat.notes
        if notes:
            log.info("%s -> %s model %s: %s", self.dialect.name, self.provider.kind, self.call.model_name,
                     "; ".join(dict.fromkeys(notes)))

    # -- streamed ------------------------------------------------------------------

    async def open(self) -> None:
        request = self.provider.chat_request(self.client, self.chat, stream=True)
        self._log_notes()
        response = self.response = await open_ok(self.client, self.call, self.provider, request)
        if not response.headers.get("content-type", "").startswith(self.provider.stream_media_type):
            await read_limited(response, 1024 * 1024)
            raise upstream_error("The upstream answered a streamed request without a stream.")

    async def pump(self, write: Write) -> bytes:
        assert self.response is not None
        decoder = self.provider.stream_decoder()
        encoder = self.encoder = self.dialect.stream_encoder(self.call)
        first = encoder.start()
        if first:
            await write(first)
        try:
            async for raw in body_pieces(self.response):
                try:
                    events = decoder.feed(raw)
                except GatewayError as error:
                    # What the upstream sent before its error event is the client's (and charged).
                    await self._relay(decoded_before(error), encoder, write)
                    raise
                await self._relay(events, encoder, write)
                if decoder.done:
                    break
        except EventTooLarge:
            raise upstream_error("The upstream sent an event larger than the gateway relays.") from None
        except httpx.HTTPError as exc:
            raise upstream_failure_error(
                exc, "The upstream stopped sending before the answer was complete.", "The upstream stream failed"
            ) from None
        except GatewayError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise upstream_error(f"The upstream sent a stream the gateway cannot read ({type(exc).__name__}).") from None
        if not decoder.done:
            raise upstream_error("The upstream closed the stream before it was complete.")
        return encoder.end()

    async def _relay(self, events: list[Any], encoder: Any, write: Write) -> None:
        call, hooks = self.call, self.pipeline
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                self.completion_chars += len(event.text)  # type: ignore[union-attr]
            elif kind is UsageReport:
                call.usage = event.usage  # type: ignore[union-attr]
            frame = encoder.encode(event)
            if frame:
                if hooks.chunk_hooks:
                    hooks.on_chunk(call, frame_data(frame))
                await write(frame)

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()

    def error_frame(self, error: GatewayError) -> bytes:
        """A failure after the first byte, as the encoder writes it (it knows the stream's ids)."""
        encoder = getattr(self, "encoder", None)
        frame = getattr(encoder, "error_frame", None)
        return frame(error) if frame is not None else self.dialect.error_frame(error)

    # -- complete --------------------------------------------------------------------

    async def complete(self) -> bytes:
        call, provider = self.call, self.provider
        if self.dialect.needs == "embeddings":
            request = provider.embeddings_request(self.client, self.embeddings)
            body = await read_answer(await open_ok(self.client, call, provider, request))
            embeddings = _read(provider.embeddings_response, body)
            call.usage = embeddings.usage
            return _json(self.dialect.embeddings_answer(embeddings, call))
        request = provider.chat_request(self.client, self.chat, stream=False)
        self._log_notes()
        body = await read_answer(await open_ok(self.client, call, provider, request))
        answer = _read(provider.chat_response, body)
        call.usage = answer.usage
        self.completion_chars = len(answer.text) + sum(len(t.arguments) for t in answer.tool_calls)
        return _json(self.dialect.chat_answer(answer, call))


def _read(parse: Any, body: bytes) -> Any:
    """The provider's reading of an answer; an answer it cannot read is the upstream's fault (502)."""
    try:
        return parse(body)
    except GatewayError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise upstream_error(f"The upstream answered with something the gateway cannot read ({type(exc).__name__}).") from None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def frame_data(frame: bytes) -> str:
    """The ``data`` of the SSE events in ``frame``, for on_chunk hooks (only parsed when a hook wants it)."""
    lines = [line[5:].lstrip(" ") if line.startswith("data:") else None for line in frame.decode().split("\n")]
    return "\n".join(line for line in lines if line is not None)
