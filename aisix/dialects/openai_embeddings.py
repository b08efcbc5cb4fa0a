"""OpenAI embeddings (``POST /v1/embeddings``), as a client dialect.

`validate` serves every embeddings call; `to_embeddings` and
`embeddings_answer` serve the translated ones (an OpenAI client, a provider
with its own embeddings API). Token arrays as ``input`` are valid OpenAI but
only an OpenAI-compatible upstream reads them: on the translated path they are
a 400 (send text). ``base64`` answers are little-endian float32, as OpenAI
writes them (and as the ``openai`` SDK asks for by default).

`embeddings_usage` reads the usage of an OpenAI embeddings answer without
parsing the vectors: a multi-megabyte answer would otherwise be parsed only to
charge its tokens.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import TYPE_CHECKING, Any

from ..auth import bearer_token
from ..call import TokenUsage
from ..errors import bad_request
from ..translate.neutral import EmbeddingsRequest, EmbeddingsResponse, unsupported
from ..usage import estimate_prompt_tokens, usage_from_dict
from .base import Dialect
from .openai_chat import positive_int

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from ..call import Call

ENCODINGS = ("float", "base64")
INPUT_SHAPE = "'input' must be a non-empty string, array of strings, or array of token arrays."
# Ignored on the translated path: an end-user id for OpenAI's abuse monitoring.
IGNORED_FIELDS = frozenset({"user"})


class OpenAIEmbeddingsDialect(Dialect):
    name = "openai_embeddings"
    needs = "embeddings"

    def credentials(self, headers: "Headers") -> str:
        return bearer_token(headers.get("authorization"))

    def validate(self, body: dict[str, Any]) -> tuple[str, bool]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("You must provide a model parameter (a string).", param="model")
        _input_kind(body.get("input"))
        encoding = body.get("encoding_format")
        if encoding is not None and encoding not in ENCODINGS:
            raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        positive_int(body, "dimensions")
        return model, False

    def to_embeddings(self, body: dict[str, Any]) -> EmbeddingsRequest:
        raw = body["input"]
        if _input_kind(raw) == "tokens":
            raise unsupported("input", "as token arrays when this model's provider is not OpenAI-compatible: send text")
        inputs = [raw] if isinstance(raw, str) else list(raw)
        return EmbeddingsRequest(inputs=inputs, dimensions=positive_int(body, "dimensions"))

    def embeddings_answer(self, answer: EmbeddingsResponse, call: "Call") -> dict[str, Any]:
        as_base64 = call.body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": index, "embedding": _base64(vector) if as_base64 else vector}
            for index, vector in enumerate(answer.vectors)
        ]
        usage = answer.usage or call.usage
        if usage is None:  # the provider reports none (Gemini): the estimate the key is charged (settle_usage)
            estimate = estimate_prompt_tokens(call.body)
            usage = TokenUsage(estimate, 0, estimate)
        return {
            "object": "list",
            "data": data,
            "model": call.model_name,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        }


def _input_kind(raw: Any) -> str:
    """"text" or "tokens"; a 400 for anything else."""
    if isinstance(raw, str):
        if raw:
            return "text"
    elif isinstance(raw, list) and raw:
        if all(isinstance(item, str) for item in raw):
            return "text"
        if all(_is_token(item) for item in raw):
            return "tokens"
        if all(isinstance(item, list) and item and all(_is_token(t) for t in item) for item in raw):
            return "tokens"
    raise bad_request(INPUT_SHAPE, param="input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embeddings_usage(body: bytes) -> TokenUsage | None:
    """The ``usage`` of an OpenAI embeddings answer, reading only its end when it can.

    OpenAI writes ``usage`` after ``data``: find the last ``"usage"`` key and
    parse just the object that follows. If that does not give a usage object
    (another layout, a ``"usage"`` inside a string), parse the whole body.
    """
    at = body.rfind(b'"usage"')
    if at >= 0:
        colon = body.find(b":", at + 7)
        if colon >= 0 and not body[at + 7 : colon].strip():
            start = colon + 1
            while start < len(body) and body[start] in b" \t\r\n":
                start += 1
            try:
                raw, _ = json.JSONDecoder().raw_decode(body[start : start + 4096].decode("utf-8", "replace"))
            except (ValueError, UnicodeDecodeError):
                raw = None
            usage = _usage(raw)
            if usage is not None:
                return usage
    try:
        whole = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return _usage(whole.get("usage")) if isinstance(whole, dict) else None


def _usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("prompt_tokens"), int):
        return None
    usage = usage_from_dict(raw)
    if usage is None:
        return None
    # Embeddings have no completion: total is what was charged (prompt tokens).
    return TokenUsage(usage.prompt_tokens, 0, usage.total_tokens or usage.prompt_tokens)
