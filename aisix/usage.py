"""Token usage: read it from what the upstream sends, or estimate it when it sends none.

The estimate is character based (about four characters a token for English
text, OpenAI's own rule of thumb) so that it works offline and costs almost
nothing; a tokenizer such as tiktoken downloads its encodings on first use,
which a Lambda function or an offline machine cannot do. Estimated usage is
always marked as such (`Call.usage_estimated`).
"""

from __future__ import annotations

from typing import Any

from .call import TokenUsage

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


def delta_chars(chunk: dict[str, Any]) -> int:
    """Characters of text a stream chunk adds (``choices[].delta.content``), for the estimate."""
    chars = 0
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str):
                    chars += len(content)
    return chars


def completion_chars(response: dict[str, Any]) -> int:
    chars = 0
    for choice in response.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            chars += len(message["content"])
    return chars
