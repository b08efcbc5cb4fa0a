"""The OpenAI embeddings dialect: requests, answers (float and base64) and usage read from a large answer's end."""

from __future__ import annotations

import base64
import json
import random
import struct

import pytest
from openai.types import CreateEmbeddingResponse

from aisix.call import Call, TokenUsage
from aisix.dialects import load
from aisix.dialects import openai_embeddings
from aisix.dialects.openai_embeddings import OpenAIEmbeddingsDialect, embeddings_usage
from aisix.errors import GatewayError
from aisix.translate.neutral import EmbeddingsResponse

dialect = OpenAIEmbeddingsDialect()
VECTORS = [[0.25, -1.5, 3.0], [0.1, 0.2, 0.3]]


def call_for(body: dict) -> Call:
    return Call(key=None, model_name="titan", body=body, stream=False, dialect="openai_embeddings")


def test_it_needs_an_embeddings_provider() -> None:
    assert dialect.needs == "embeddings" and isinstance(load("openai_embeddings"), OpenAIEmbeddingsDialect)


@pytest.mark.parametrize("raw", ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_valid_inputs(raw) -> None:
    assert dialect.validate({"model": "titan", "input": raw, "encoding_format": "base64", "dimensions": 256}) == (
        "titan",
        False,
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "titan"}, "input"),
        ({"model": "titan", "input": ""}, "input"),
        ({"model": "titan", "input": []}, "input"),
        ({"model": "titan", "input": ["a", 1]}, "input"),
        ({"model": "titan", "input": [True]}, "input"),
        ({"model": "titan", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "titan", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_invalid_requests_are_400s_naming_the_field(body: dict, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        dialect.validate(body)
    assert info.value.status == 400 and info.value.param == param


def test_text_maps_to_neutral_and_token_arrays_are_refused() -> None:
    request = dialect.to_embeddings({"model": "titan", "input": "hello", "dimensions": 256, "user": "u"})
    assert (request.inputs, request.dimensions) == (["hello"], 256)
    assert dialect.to_embeddings({"model": "titan", "input": ["a", "b"]}).inputs == ["a", "b"]
    with pytest.raises(GatewayError) as info:
        dialect.to_embeddings({"model": "titan", "input": [[1, 2], [3]]})
    assert info.value.status == 400 and info.value.param == "input" and "token arrays" in info.value.message


def test_a_float_answer_is_a_valid_embeddings_response() -> None:
    answer = EmbeddingsResponse(VECTORS, TokenUsage(7, 0, 7))
    body = dialect.embeddings_answer(answer, call_for({"model": "titan", "input": ["a", "b"]}))
    parsed = CreateEmbeddingResponse.model_validate(body)
    assert parsed.model == "titan" and parsed.object == "list"
    assert [(d.index, d.embedding, d.object) for d in parsed.data] == [
        (0, VECTORS[0], "embedding"),
        (1, VECTORS[1], "embedding"),
    ]
    assert (parsed.usage.prompt_tokens, parsed.usage.total_tokens) == (7, 7)


def test_a_base64_answer_is_little_endian_float32() -> None:
    body = dialect.embeddings_answer(
        EmbeddingsResponse(VECTORS, None), call_for({"model": "titan", "input": "a", "encoding_format": "base64"})
    )
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert raw == struct.pack("<3f", 0.25, -1.5, 3.0)
    # As the openai SDK decodes it (numpy-free path): little-endian float32.
    assert list(struct.unpack("<3f", raw)) == VECTORS[0]
    decoded = {**body, "data": [{**d, "embedding": list(struct.unpack(f"<{len(base64.b64decode(d['embedding'])) // 4}f",
                                                                       base64.b64decode(d["embedding"])))}
                                for d in body["data"]]}  # fmt: skip
    # No usage from the provider: the estimate the key is charged ("a": 1 token), not 0.
    assert CreateEmbeddingResponse.model_validate(decoded).usage.total_tokens == 1


def large_answer(n: int = 400, dims: int = 1536) -> bytes:
    rng = random.Random(7)
    data = [
        {"object": "embedding", "index": i, "embedding": [rng.uniform(-1, 1) for _ in range(dims)]} for i in range(n)
    ]
    body = {"object": "list", "data": data, "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 12345, "total_tokens": 12345}}  # fmt: skip
    return json.dumps(body, indent=2).encode()


def test_usage_is_read_from_the_end_of_a_large_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    body = large_answer()
    assert len(body) > 5_000_000
    # The whole body is never parsed when the usage sits at the end.
    monkeypatch.setattr(openai_embeddings.json, "loads", lambda *a, **k: pytest.fail("parsed the whole body"))
    assert embeddings_usage(body) == TokenUsage(12345, 0, 12345)


def test_usage_elsewhere_falls_back_to_a_full_parse() -> None:
    first = b'{"usage": {"prompt_tokens": 3, "total_tokens": 3}, "object": "list", "data": [], "model": "m"}'
    assert embeddings_usage(first) == TokenUsage(3, 0, 3)
    # The string "usage" after the real key: the end search finds the string, the full parse the key.
    tricky = b'{"usage": {"prompt_tokens": 5, "total_tokens": 5}, "model": "usage", "data": []}'
    assert embeddings_usage(tricky) == TokenUsage(5, 0, 5)
    assert embeddings_usage(b'{"object": "list", "data": []}') is None
    assert embeddings_usage(b"not json") is None
