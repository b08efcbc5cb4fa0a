"""An upstream's error event that arrives in the same read as events before it: those events are kept.

A fast upstream (or a mock) writes its last events and its error event back to back, and the
gateway reads them in one piece. The events before the error were sent: the client gets them
before the error frame, and they are charged. Found by the SDK matrix (`test_matrix.py`), where
the text before a mid-stream error was lost for every decoder that raised.
"""

from __future__ import annotations

import json

import pytest

from aisix.config import ModelConfig
from aisix.dialects.anthropic_messages import AnthropicPassthrough
from aisix.errors import GatewayError
from aisix.local.mocks.bedrock import event_frame, exception_frame
from aisix.providers import provider_class
from aisix.providers.base import decoded_before
from aisix.translate.neutral import TextDelta


def _sse(event: str | None, payload: dict, end: bytes = b"\n\n") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + end


OPENAI = (_sse(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                      "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})
          + _sse(None, {"error": {"message": "boom", "type": "server_error"}}))
ANTHROPIC = (_sse("message_start", {"type": "message_start", "message": {
                 "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}})
             + _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})
             + _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": "Hi"}})
             + _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
GEMINI = (_sse(None, {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}]},
               b"\r\n\r\n")
          + _sse(None, {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}, b"\r\n\r\n"))
BEDROCK = (event_frame("messageStart", {"role": "assistant"})
           + event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
           + exception_frame("modelStreamErrorException", {"message": "boom", "originalStatusCode": 500}))


def model(kind: str) -> ModelConfig:
    return ModelConfig(name="m", provider=kind, model="up-model", base_url="http://127.0.0.1:9", timeout=5,
                       region="us-east-1" if kind == "bedrock" else None)


@pytest.mark.parametrize("kind, raw", [("openai", OPENAI), ("azure", OPENAI), ("anthropic", ANTHROPIC),
                                       ("gemini", GEMINI), ("bedrock", BEDROCK)],
                         ids=["openai", "azure", "anthropic", "gemini", "bedrock"])
def test_a_decoder_keeps_the_text_before_an_error_in_the_same_read(kind: str, raw: bytes) -> None:
    decoder = provider_class(kind)(model(kind)).stream_decoder()
    with pytest.raises(GatewayError) as info:
        decoder.feed(raw)
    assert info.value.status == 502
    assert [e.text for e in decoded_before(info.value) if isinstance(e, TextDelta)] == ["Hi"]


def test_the_anthropic_pass_through_keeps_the_frames_before_an_error_in_the_same_read() -> None:
    reader = AnthropicPassthrough(model("anthropic"))
    with pytest.raises(GatewayError) as info:
        reader.feed(ANTHROPIC)
    assert info.value.type == "overloaded_error"
    frames = decoded_before(info.value)
    assert [f.split(b"\n", 1)[0] for f in frames] == [
        b"event: message_start", b"event: content_block_start", b"event: content_block_delta"]
    assert reader.output_chars == 2  # charged as relayed


def test_an_error_alone_carries_nothing() -> None:
    decoder = provider_class("openai")(model("openai")).stream_decoder()
    with pytest.raises(GatewayError) as info:
        decoder.feed(_sse(None, {"error": {"message": "boom"}}))
    assert decoded_before(info.value) == []
