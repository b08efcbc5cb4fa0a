"""The provider interface: what an upstream API must say for the gateway to call it.

A provider is built once per model alias at start (everything fixed, such as
URLs, headers and the upstream model id, is computed in ``__init__``) and
then turns neutral requests (`aisix.translate.neutral`) into its HTTP
requests, and its answers, stream bytes and errors back into neutral values.
It never sees the client's dialect: translation happens on the neutral side.

The HTTP client, pooling, time-outs and failure mapping are shared
(`aisix.providers.client`); a provider only builds `httpx.Request` objects
(`Provider.post`, or ``client.build_request`` for per-call headers) and, where
it must (Bedrock's SigV4), signs them in `prepare`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import httpx

from ..config import ModelConfig
from ..errors import GatewayError, upstream_error
from ..translate.neutral import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    StreamEvent,
)


class StreamDecoder(Protocol):
    """Upstream stream bytes in, neutral events out; one per call, fed in arrival order.

    ``feed`` raises `GatewayError` for an error the upstream reports inside the
    stream (its own error event, an exception frame); the events it decoded
    before the error in the same bytes ride on the error (`failed_after`), so
    the relay still writes them first. ``done`` turns True once the upstream
    has said the answer is complete; a stream that ends before that was cut off.
    """

    done: bool

    def feed(self, data: bytes) -> list[StreamEvent]: ...


class Provider:
    """Base class: one upstream API. Subclasses override what they serve."""

    kind: ClassVar[str]  # the models file's ``provider`` value
    # Client dialects this upstream speaks as they are: relayed without translation.
    native_dialects: ClassVar[frozenset[str]] = frozenset()
    # What it serves: "chat", "embeddings", "count_tokens".
    serves: ClassVar[frozenset[str]] = frozenset({"chat"})
    # What a stream's content-type starts with when it is one.
    stream_media_type: ClassVar[str] = "text/event-stream"

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.timeout = httpx.Timeout(model.timeout, connect=min(model.timeout, 10.0))
        self._timeout_extension = self.timeout.as_dict()
        self._prepared: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Any, httpx.URL, list[tuple[bytes, bytes]]]] = {}

    def post(self, client: httpx.AsyncClient, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Request:
        """What ``client.build_request("POST", url, content=..., headers=..., timeout=self.timeout)``
        builds, byte for byte, for a fraction of its cost.

        The URL is parsed and the client's default headers merged with ``headers`` once per
        provider, not on every call (~70 µs of each call, bench/RESULTS.md's profile of
        ``build_request``). The request is then made from a ready header list: httpx's own
        ``Request(content=...)`` looks each automatic header up again in a fresh ``Headers``
        (~25 µs a call). Same order as httpx: ``Host``, the headers, ``Content-Length``.
        """
        key = (url, tuple(headers.items()))
        prepared = self._prepared.get(key)
        if prepared is None or prepared[0] is not client:
            merged = client.headers.copy()
            merged.update(headers)
            parsed = httpx.URL(url)
            prepared = self._prepared[key] = (client, parsed, [(b"Host", parsed.netloc), *merged.raw])
        _, parsed_url, head = prepared
        if content:
            raw = [*head, (b"Content-Length", str(len(content)).encode())]
        else:  # httpx puts an empty body's length right after Host
            raw = [head[0], (b"Content-Length", b"0"), *head[1:]]
        request = httpx.Request(
            "POST", parsed_url, headers=raw,
            stream=httpx.ByteStream(content), extensions={"timeout": self._timeout_extension},
        )
        request.read()  # ``request.content``, as ``Request(content=...)`` has it
        return request

    # -- chat -----------------------------------------------------------------

    def chat_request(self, client: httpx.AsyncClient, request: ChatRequest, stream: bool) -> httpx.Request:
        raise NotImplementedError

    def chat_response(self, body: bytes) -> ChatResponse:
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        raise NotImplementedError

    # -- embeddings -------------------------------------------------------------

    def embeddings_request(self, client: httpx.AsyncClient, request: EmbeddingsRequest) -> httpx.Request:
        raise NotImplementedError

    def embeddings_response(self, body: bytes) -> EmbeddingsResponse:
        raise NotImplementedError

    # -- token counting ----------------------------------------------------------

    def count_tokens_request(self, client: httpx.AsyncClient, request: ChatRequest) -> httpx.Request:
        raise NotImplementedError

    def count_tokens_response(self, body: bytes) -> int:
        raise NotImplementedError

    # -- every call ----------------------------------------------------------------

    async def prepare(self, request: httpx.Request) -> httpx.Request:
        """The request as it is sent: signed, where the API wants signatures. Default: as built."""
        return request

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """The client's error for an upstream refusal (status >= 400). Default: an OpenAI-style body."""
        fields = error_fields(body)
        return refusal(self.model, status, headers, **fields)


def error_fields(body: bytes) -> dict[str, Any]:
    """message/type/code/param of an error body shaped ``{"error": {...}}`` (OpenAI and most others)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return {"message": error.get("message"), "type": error.get("type"), "code": error.get("code"),
                "param": error.get("param")}
    if isinstance(error, str):
        return {"message": error}
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return {"message": parsed["message"]}
    return {}


def refusal(
    model: ModelConfig,
    status: int,
    headers: Mapping[str, str],
    *,
    message: Any = None,
    type: Any = None,
    code: Any = None,
    param: Any = None,
) -> GatewayError:
    """An upstream refusal as the client's error, never carrying the gateway's upstream key.

    4xx (the request's own fault) keep their status and the upstream's wording,
    which clients such as Claude Code match on; 401/403 mean the gateway's
    upstream credentials are wrong, not the client's: 502. 5xx (Anthropic's
    529 "overloaded" included) are 502, which every SDK retries, with the
    upstream's message after the status; 429, 503 and 529 keep ``Retry-After``.
    """
    name = model.name
    if status in (401, 403):
        return upstream_error(f"The upstream for '{name}' refused the gateway's credentials.")
    retry_after = {"retry-after": headers["retry-after"]} if "retry-after" in headers else {}
    if status < 400 or status >= 500:
        said = f": {redact(model, str(message))[:500]}" if message else "."
        error = upstream_error(f"The upstream for '{name}' failed with HTTP {status}{said}")
        if status in (503, 529):
            error.headers.update(retry_after)
        return error
    text = str(message or f"The upstream for '{name}' refused the request (HTTP {status}).")
    return GatewayError(
        status,
        redact(model, text),
        type=str(type or ("rate_limit_error" if status == 429 else "invalid_request_error")),
        param=param if isinstance(param, str) else None,
        code=str(code) if code is not None else None,
        headers=retry_after if status == 429 else None,
    )


def redact(model: ModelConfig, text: str) -> str:
    """``text`` without the model's upstream key, should an upstream echo it."""
    return text.replace(model.api_key, "[redacted]") if model.api_key else text


def in_stream_error(model: ModelConfig, message: Any, type: Any = None, code: Any = None) -> GatewayError:
    """An error the upstream reported inside a stream that had started: 502, its wording kept."""
    text = str(message or f"The upstream for '{model.name}' reported an error mid-stream.")
    return GatewayError(502, redact(model, text), type=str(type or "api_error"),
                        code=str(code) if code is not None else "upstream_error")


def failed_after(error: GatewayError, decoded: list[Any]) -> GatewayError:
    """``error``, carrying what the same ``feed`` decoded before it (read back with `decoded_before`).

    One read from the upstream often holds several events and then the error
    event (a mock or a fast model sends them back to back): what came before
    the error was sent by the upstream, so it reaches the client and is charged.
    """
    error.decoded = decoded  # type: ignore[attr-defined]
    return error


def decoded_before(error: GatewayError) -> list[Any]:
    """The events (or frames) a decoder decoded before it raised ``error``; none if it said nothing."""
    return getattr(error, "decoded", None) or []


def json_body(value: Any) -> bytes:
    """A request body as compact JSON bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
