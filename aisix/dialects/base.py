"""The dialect interface: what a client protocol must say for the gateway to serve it.

A dialect is what one kind of client speaks (OpenAI chat completions, OpenAI
Responses, Anthropic Messages, OpenAI embeddings). It owns, for that
protocol: where the API key is, what a valid request is, how its requests
map to the neutral model, how a neutral answer, a stream and an error look
to its clients. It never sees the upstream's protocol.

Errors inside the gateway are `GatewayError` (status, message, type, param,
code): the dialect decides how they are written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import GatewayError
from ..translate.neutral import ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, StreamEvent

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from ..call import Call


class StreamEncoder(Protocol):
    """Neutral stream events in, the client's frames out (one call's worth of state).

    ``start`` is written once, before the first event; ``encode`` returns the
    bytes for one event (``b""`` when it adds nothing the client sees yet);
    ``end`` returns the closing frames of a complete answer (usage, the
    protocol's end marker). A failed stream never gets ``end``: it gets the
    dialect's `Dialect.error_frame` instead.
    """

    def start(self) -> bytes: ...

    def encode(self, event: StreamEvent) -> bytes: ...

    def end(self) -> bytes: ...


class Dialect:
    """Base class: one client protocol."""

    name: ClassVar[str]  # e.g. "openai_chat"
    # What a provider must serve for this dialect: "chat", "embeddings" or "count_tokens".
    needs: ClassVar[str] = "chat"
    # The comment a silent stream is kept alive with (SSE comments suit every SSE client).
    keepalive: ClassVar[bytes] = b": keep-alive\n\n"

    # -- request ------------------------------------------------------------------

    def credentials(self, headers: "Headers") -> str:
        """The API key the client presented; raise a 401 `GatewayError` if there is none."""
        raise NotImplementedError

    def validate(self, body: dict[str, Any]) -> tuple[str, bool]:
        """Check the request; return (model alias, stream?). Raise a 400 naming the field."""
        raise NotImplementedError

    def to_chat(self, body: dict[str, Any]) -> ChatRequest:
        """The request in neutral form, for a provider that does not speak this dialect."""
        raise NotImplementedError

    def to_embeddings(self, body: dict[str, Any]) -> EmbeddingsRequest:
        raise NotImplementedError

    # -- answers ------------------------------------------------------------------

    def chat_answer(self, answer: ChatResponse, call: "Call") -> dict[str, Any]:
        """A complete neutral answer as this protocol's response body."""
        raise NotImplementedError

    def embeddings_answer(self, answer: EmbeddingsResponse, call: "Call") -> dict[str, Any]:
        raise NotImplementedError

    def stream_encoder(self, call: "Call") -> StreamEncoder:
        raise NotImplementedError

    # -- errors -------------------------------------------------------------------

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """The error as this protocol's JSON error body (default: OpenAI's four keys)."""
        return error.to_dict()

    def error_frame(self, error: GatewayError) -> bytes:
        """The error as one stream frame, for a failure after the stream has started."""
        return error.to_sse()
