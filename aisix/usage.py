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
    """The prompt of a request in any client dialect, estimated: the text it carries.

    Counts the text of ``messages`` (OpenAI and Anthropic: string content or
    parts with ``text``), Anthropic's ``system``, and the Responses API's
    ``instructions`` and ``input`` (a string, or items with content, output or
    arguments); images and other data are not text and are not counted.
    """
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    chars = _text_chars(messages) + _text_chars(body.get("system")) + _text_chars(body.get("instructions"))
    items = body.get("input")
    chars += _text_chars(items)
    count = len(messages) + (len(items) if isinstance(items, list) else 0)
    return estimate_tokens(chars) + TOKENS_PER_MESSAGE * count


_TEXT_KEYS = ("content", "text", "output", "arguments", "input")


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in a message-like value: strings, lists of them, and the text-bearing keys of
    objects (so ids, roles, types and image data are not counted)."""
    if isinstance(value, str):
        return len(value)
    if depth > 6:
        return 0
    if isinstance(value, list):
        return sum(_text_chars(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return sum(_text_chars(value[k], depth + 1) for k in _TEXT_KEYS if k in value)
    return 0


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
