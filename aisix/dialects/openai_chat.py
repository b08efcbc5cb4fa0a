"""OpenAI chat completions, as a client dialect for translated calls.

Used when an OpenAI chat client calls a model whose upstream does not speak
OpenAI (Anthropic, Bedrock, Gemini): the request is read into the neutral
model and the neutral answer is written back as a ``chat.completion`` body
or ``chat.completion.chunk`` frames. An OpenAI client calling an
OpenAI-compatible upstream never comes here: that call stays a raw
pass-through.

What cannot be carried gets a 400 naming the field (`UNSUPPORTED_FIELDS`,
and parts of messages such as audio). Fields that only tune OpenAI's own
service or sampling, and that no other provider needs to answer correctly,
are ignored (`IGNORED_FIELDS`); a field in neither list is ignored too, so a
newer SDK never fails a call for a field it adds. Either way the field is
named in the call's one log line (``ChatRequest.notes``). ``prompt_cache_key``
is carried as ``ChatRequest.cache_key``, for providers with prompt caching.

The small helpers here (ids, data URLs, message merging) are shared with the
Responses dialect.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from ..auth import bearer_token
from ..errors import bad_request
from ..translate.neutral import (
    ChatRequest,
    ChatResponse,
    Finish,
    ImagePart,
    Message,
    Part,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
    unsupported,
)
from .base import Dialect

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from ..call import Call, TokenUsage
    from ..errors import GatewayError
    from ..translate.neutral import StreamEvent

log = logging.getLogger("aisix.dialects")

WHERE = "when this model's provider is not OpenAI-compatible"

# Read into the neutral request.
MAPPED_FIELDS = frozenset(
    {
        "model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "stop", "stream", "reasoning_effort",
        # Checked, and refused unless they ask for nothing special (see `_refuse_unsupported`).
        "n", "logprobs", "top_logprobs", "response_format", "modalities", "logit_bias",
    }
)  # fmt: skip

# Ignored on the translated path, and why: they tune OpenAI's own service (store,
# metadata, service_tier, prompt_cache_*), identify the end user (user,
# safety_identifier), only change how the answer is framed here, which the
# gateway does itself (stream_options), or are sampling hints the other providers
# mostly lack and whose absence still gives a correct answer (seed, penalties,
# verbosity, parallel_tool_calls).
IGNORED_FIELDS = frozenset(
    {
        "user", "metadata", "store", "seed", "parallel_tool_calls", "service_tier", "stream_options",
        "frequency_penalty", "presence_penalty", "safety_identifier", "prompt_cache_key",
        "prompt_cache_retention", "verbosity",
    }
)  # fmt: skip

# Whole features another provider cannot give: a 400 naming the field whenever present.
UNSUPPORTED_FIELDS = frozenset(
    {"audio", "prediction", "web_search_options", "functions", "function_call"}
)

_FINISH_CHUNK_REASONS = ("stop", "length", "tool_calls", "content_filter")


# -- shared helpers -------------------------------------------------------------


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``chatcmpl-…``, ``resp_…``): a prefix and 24 hex digits."""
    return prefix + secrets.token_hex(12)


def image_from_url(url: Any, field_name: str) -> ImagePart:
    """An image part from an ``image_url``: a base64 ``data:`` URL inline, an http(s) URL by reference."""
    if not isinstance(url, str) or not url:
        raise bad_request(f"'{field_name}' must be a URL string.", param=field_name)
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding.lower() != "base64" or not media_type:
            raise bad_request(
                f"'{field_name}' must be a base64 data URL ('data:<media type>;base64,<data>') or an http(s) URL.",
                param=field_name,
            )
        return ImagePart(media_type=media_type.lower(), data=data)
    if url.startswith(("https://", "http://")):
        return ImagePart(url=url)
    raise bad_request(f"'{field_name}' must be a base64 data URL or an http(s) URL.", param=field_name)


def append_message(messages: list[Message], role: str, parts: list[Part]) -> None:
    """Add parts as a message, merged into the previous one when it has the same role.

    Providers that want strictly alternating roles (Anthropic, Bedrock, Gemini)
    get them: an assistant text followed by its tool calls, or the results of
    several tools followed by the user's next words, become one message each.
    """
    if not parts:
        return
    if messages and messages[-1].role == role:
        messages[-1].parts.extend(parts)
    else:
        messages.append(Message(role=role, parts=parts))  # type: ignore[arg-type]


def number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"'{name}' must be a number.", param=name)
    return value


def positive_int(body: dict[str, Any], name: str) -> int | None:
    """A positive whole number; ``5.0`` counts (JSON, and JSON Schema's ``integer``, make no difference)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"'{name}' must be a positive integer.", param=name)
    return value


def text_of(content: Any, field_name: str, kinds: tuple[str, ...] = ("text",)) -> str:
    """The text of a content that may only hold text: a string, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"'{field_name}' must be a string or an array of content parts.", param=field_name)
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds or not isinstance(part.get("text"), str):
            raise unsupported(f"{field_name}[{index}].type={kind}", "here: only text parts are")
        texts.append(part["text"])
    return "".join(texts)


def ignored_notes(body: dict[str, Any], mapped: frozenset[str]) -> list[str]:
    """The note naming the request's fields a translated call does not carry (for the call's log line)."""
    ignored = sorted(key for key in body if key not in mapped)
    return ["ignored " + ", ".join(ignored)] if ignored else []


def cache_key(body: dict[str, Any]) -> str | None:
    """``prompt_cache_key``: the client asks for its prompt prefix to be cached (`ChatRequest.cache_key`)."""
    key = body.get("prompt_cache_key")
    return key if isinstance(key, str) and key else None


def usage_details(usage: "TokenUsage") -> dict[str, Any]:
    """Usage as chat completions write it."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# -- the dialect ------------------------------------------------------------------


class OpenAIChatDialect(Dialect):
    name = "openai_chat"

    def credentials(self, headers: "Headers") -> str:
        return bearer_token(headers.get("authorization"))

    def validate(self, body: dict[str, Any]) -> tuple[str, bool]:
        # The same checks (and words) the pass-through has always made; tests match them.
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("You must provide a model parameter (a string).", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty array of messages.", param="messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad_request(
                    f"messages[{index}] must be an object with a 'role'.", param=f"messages.[{index}]"
                )
        if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
            raise bad_request("'stream' must be a boolean.", param="stream")
        return model, body.get("stream") is True

    def to_chat(self, body: dict[str, Any]) -> ChatRequest:
        _refuse_unsupported(body)
        notes = ignored_notes(body, MAPPED_FIELDS)
        system, messages = _messages(body["messages"])
        tools = _tools(body.get("tools"))
        choice, choice_name = _tool_choice(body.get("tool_choice"))
        max_tokens = positive_int(body, "max_completion_tokens") or positive_int(body, "max_tokens")
        effort = body.get("reasoning_effort")
        if effort is not None and not isinstance(effort, str):
            raise bad_request("'reasoning_effort' must be a string.", param="reasoning_effort")
        return ChatRequest(
            messages=messages,
            system=system,
            tools=tools,
            tool_choice=choice,
            tool_choice_name=choice_name,
            max_tokens=max_tokens,
            temperature=number(body, "temperature"),
            top_p=number(body, "top_p"),
            stop=_stop(body.get("stop")),
            stream=body.get("stream") is True,
            reasoning_effort=effort,
            cache_key=cache_key(body),
            notes=notes,
        )

    def chat_answer(self, answer: ChatResponse, call: "Call") -> dict[str, Any]:
        text = answer.text
        calls = answer.tool_calls
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for c in calls
            ]
        body: dict[str, Any] = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}],
            "system_fingerprint": None,
        }
        usage = answer.usage or call.usage
        if usage is not None:
            body["usage"] = usage_details(usage)
        return body

    def stream_encoder(self, call: "Call") -> "ChatStreamEncoder":
        options = call.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return ChatStreamEncoder(call.model_name, include_usage)


# -- stream -------------------------------------------------------------------------


class ChatStreamEncoder:
    """Neutral events as ``chat.completion.chunk`` frames, ended by ``data: [DONE]``.

    Every chunk of one answer shares its id, ``created`` and model, so they are
    written once as a byte prefix; a text delta costs one ``json.dumps`` of its text.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        head = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self._head = json.dumps(head)[:-1].encode()  # without the closing brace
        # OpenAI writes "usage": null on every chunk once usage was asked for.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._open = b"data: " + self._head + b',"choices":[{"index":0,"delta":'
        self._close = b',"logprobs":null,"finish_reason":null}]' + self._tail
        self.usage: "TokenUsage | None" = None
        self.finished = False
        self._arguments: dict[int, bool] = {}  # tool index -> got any argument text

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._open + json.dumps(delta).encode() + self._close

    def start(self) -> bytes:
        return self._delta({"role": "assistant", "content": "", "refusal": None})

    def encode(self, event: "StreamEvent") -> bytes:
        if type(event) is TextDelta:
            if not event.text:
                return b""
            return self._open + b'{"content":' + json.dumps(event.text).encode() + b"}" + self._close
        if type(event) is ToolCallDelta:
            if not event.arguments:
                return b""
            self._arguments[event.index] = True
            return self._delta({"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]})
        if type(event) is ToolCallStart:
            self._arguments.setdefault(event.index, False)
            return self._delta(
                {
                    "tool_calls": [
                        {
                            "index": event.index,
                            "id": event.id,
                            "type": "function",
                            "function": {"name": event.name, "arguments": ""},
                        }
                    ]
                }
            )
        if type(event) is Finish:
            return self._finish(event.reason)
        if type(event) is UsageReport:
            self.usage = event.usage
        return b""

    def _finish(self, reason: str) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        out = b""
        # A tool called without arguments still gets valid JSON ("{}"), as OpenAI writes it.
        for index, got in self._arguments.items():
            if not got:
                out += self._delta({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]})
        finish = reason if reason in _FINISH_CHUNK_REASONS else "stop"
        return out + (
            b"data: " + self._head + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"'
            + finish.encode() + b'"}]' + self._tail
        )  # fmt: skip

    def error_frame(self, error: "GatewayError") -> bytes:
        """A failure after the start: the error object as one ``data:`` frame, as the pass-through writes it."""
        return error.to_sse()

    def end(self) -> bytes:
        out = b""
        if not self.finished:  # the upstream said it was done without a stop reason
            out += self._finish("tool_calls" if self._arguments else "stop")
        if self.include_usage and self.usage is not None:
            out += b"data: " + self._head + b',"choices":[],"usage":' + json.dumps(usage_details(self.usage)).encode()
            out += b"}\n\n"
        return out + b"data: [DONE]\n\n"


# -- request ---------------------------------------------------------------------


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name in UNSUPPORTED_FIELDS:
        if body.get(name) is not None:
            raise unsupported(name, WHERE)
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("n", WHERE + " (only one choice, n=1, can be asked for)")
    if body.get("logprobs"):
        raise unsupported("logprobs", WHERE)
    if body.get("top_logprobs"):
        raise unsupported("top_logprobs", WHERE)
    if body.get("logit_bias"):
        raise unsupported("logit_bias", WHERE)
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind != "text":
            raise unsupported(f"response_format.type={kind}", WHERE)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("modalities", WHERE + " (text only)")


def _messages(raw: list[dict[str, Any]]) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    messages: list[Message] = []
    names: dict[str, str] = {}  # tool call id -> tool name, for results that do not say it
    for index, message in enumerate(raw):
        role = message["role"]
        where = f"messages[{index}]"
        content = message.get("content")
        if role in ("system", "developer"):
            text = text_of(content, f"{where}.content")
            if text:
                system.append(text)
        elif role == "user":
            append_message(messages, "user", _user_parts(content, where))
        elif role == "assistant":
            append_message(messages, "assistant", _assistant_parts(message, where, names))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}.tool_call_id must be a string.", param=f"{where}.tool_call_id")
            result = ToolResult(call_id=call_id, content=text_of(content, f"{where}.content"), name=names.get(call_id))
            append_message(messages, "user", [result])
        elif role == "function":
            raise unsupported(f"{where}.role=function", WHERE + " (use tools and role 'tool')")
        else:
            raise bad_request(f"{where}.role '{role}' is not a valid role.", param=f"{where}.role")
    return ("\n\n".join(system) if system else None), messages


def _user_parts(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of content parts.", param=f"{where}.content")
    parts: list[Part] = []
    for index, part in enumerate(content):
        name = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                parts.append(TextPart(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(image_from_url(url, f"{name}.image_url.url"))
        elif kind in ("input_audio", "file"):
            raise unsupported(f"{name}.type={kind}", WHERE)
        else:
            raise bad_request(f"{name} is not a valid content part.", param=name)
    return parts


def _assistant_parts(message: dict[str, Any], where: str, names: dict[str, str]) -> list[Part]:
    if message.get("function_call") is not None:
        raise unsupported(f"{where}.function_call", WHERE + " (use tool_calls)")
    if message.get("audio") is not None:
        raise unsupported(f"{where}.audio", WHERE)
    text = text_of(message.get("content"), f"{where}.content", ("text", "refusal"))
    parts: list[Part] = [TextPart(text)] if text else []
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise bad_request(f"{where}.tool_calls must be an array.", param=f"{where}.tool_calls")
    for index, call in enumerate(tool_calls):
        name = f"{where}.tool_calls[{index}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            kind = call.get("type") if isinstance(call, dict) else None
            raise unsupported(f"{name}.type={kind}", WHERE)
        function = call.get("function")
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(call.get("id"), str)
        ):
            raise bad_request(f"{name} must have an 'id' and a 'function' with a 'name'.", param=name)
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        names[call["id"]] = function["name"]
        parts.append(ToolCall(id=call["id"], name=function["name"], arguments=arguments))
    return parts


def _tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("'tools' must be an array.", param="tools")
    tools = []
    for index, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise unsupported(f"tools[{index}].type={kind}", WHERE + " (function tools only)")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(f"tools[{index}].function must have a 'name'.", param=f"tools[{index}].function")
        description = function.get("description")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        elif not isinstance(parameters, dict):
            raise bad_request(
                f"tools[{index}].function.parameters must be a JSON Schema object.",
                param=f"tools[{index}].function.parameters",
            )
        tools.append(
            Tool(name=function["name"], description=description if isinstance(description, str) else None,
                 parameters=parameters)
        )  # fmt: skip
    return tools


def _tool_choice(raw: Any) -> tuple[Any, str | None]:
    """(tool_choice, tool_choice_name): a named function is ("required", its name)."""
    if raw is None:
        return None, None
    if raw in ("auto", "none", "required"):
        return raw, None
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return "required", name
        raise bad_request("tool_choice.function.name must be a string.", param="tool_choice")
    kind = raw.get("type") if isinstance(raw, dict) else raw
    raise unsupported(f"tool_choice={kind}", WHERE)


def _stop(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return list(raw)
    raise bad_request("'stop' must be a string or an array of strings.", param="stop")
