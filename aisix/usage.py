"""Token usage: read it from what the upstream sends, or estimate it when it sends none.

The estimate is character based (about four characters a token for English
text, OpenAI's own rule of thumb) so that it works offline and costs almost
nothing; a tokenizer such as tiktoken downloads its encodings on first use,
which a Lambda function or an offline machine cannot do. Estimated usage is
always marked as such (`Call.usage_estimated`).
"""

from __future__ import annotations

import json
from typing import Any

from .hooks.base import TokenUsage

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role and framing, as OpenAI counts them


def estimate_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    chars = 0
    messages = body.get("messages") or []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return estimate_tokens(chars) + TOKENS_PER_MESSAGE * len(messages)


def usage_from_dict(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        total = int(raw.get("total_tokens") or prompt + completion)
    except (TypeError, ValueError):
        return None
    return TokenUsage(prompt, completion, total)


def chunk_has_usage(data: str) -> bool:
    """Whether a chunk carries a non-null ``usage``, decided without parsing JSON.

    Streams with ``include_usage`` put ``"usage":null`` in every chunk but the
    last; only that last one is worth a ``json.loads``. A ``"usage"`` inside
    message text is escaped (``\\"usage\\"``) and does not match.
    """
    at = data.find('"usage"')
    if at == -1:
        return False
    at = data.find(":", at + 7) + 1
    while data[at : at + 1] == " ":
        at += 1
    return not data.startswith("null", at)


def parse_chunk(data: str) -> dict[str, Any] | None:
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


def content_chars(data: str) -> int:
    """Length of a chunk's ``delta.content`` string, found without parsing JSON.

    Only feeds the estimate used when an upstream reports no usage, so an
    escaped character counting as two is fine.
    """
    at = data.find('"content":')
    if at == -1:
        return 0
    at += 10
    while data[at : at + 1] == " ":
        at += 1
    if data[at : at + 1] != '"':
        return 0  # null
    end = data.find('"', at + 1)
    while end != -1 and data[end - 1] == "\\":
        end = data.find('"', end + 1)
    return 0 if end == -1 else end - at - 1


def completion_chars(response: dict[str, Any]) -> int:
    chars = 0
    for choice in response.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            chars += len(message["content"])
    return chars
