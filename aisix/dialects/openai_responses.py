"""OpenAI Responses (``POST /v1/responses``), as a client dialect for translated calls.

What Codex CLI and the OpenAI Agents SDK speak. The gateway is stateless:
nothing is stored, so ``previous_response_id``, ``conversation``,
``background`` and an explicit ``store: true`` get a 400 that says so; a
missing ``store`` is taken as "do not store" (the API's default is to store,
but nothing here could ever read a stored response back, and refusing every
request that omits it would refuse most clients). Codex sends ``store:
false`` and the whole history each turn, which is what a stateless gateway
needs.

Mapping choices, for clients that send more than plain function tools:

* ``namespace`` tools (a group of functions, as Codex sends them) are
  flattened into functions named ``<namespace>__<name>``; a call to such a
  function comes back as a ``function_call`` item with ``name`` and
  ``namespace`` apart again, and ``function_call`` items in the input with a
  ``namespace`` are flattened the same way. A flattened name that clashes
  with another tool's name is a 400.
* ``custom`` (freeform) tools become a function taking one string,
  ``input``; the grammar, if any, is put in the description (the other
  provider cannot enforce it, the client checks what it gets, as it does
  anyway). Calls come back as ``custom_tool_call`` items with that ``input``.
* ``web_search`` with ``external_web_access: false`` (Codex's default,
  cached-only mode) is dropped, with a log line: the other provider cannot
  run OpenAI's search, and the gateway never runs one. A web search that
  asks for live access, and every other hosted tool (file search, code
  interpreter, computer use, MCP, shell, image generation, ...), is a 400
  naming the tool type.
* ``reasoning`` input items (OpenAI's own, often encrypted, reasoning) are
  ignored: no other provider can read them, and the turn is complete without
  them. No reasoning items are written back.
* ``system`` and ``developer`` messages, wherever they are in ``input``,
  join ``instructions`` in the system prompt, in order.
* Images a tool returned (``function_call_output`` content lists) follow the
  tool's result in the same user turn.

Streams are written as typed events (``event: <type>`` and a ``data:`` JSON
with ``type`` and ``sequence_number``), checked against the ``openai`` SDK's
``ResponseStreamEvent`` union in the tests.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ..auth import bearer_token
from ..errors import GatewayError, bad_request
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
from .openai_chat import append_message, cache_key, ignored_notes, image_from_url, new_id, number, positive_int

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from ..call import Call, TokenUsage
    from ..translate.neutral import StreamEvent

log = logging.getLogger("aisix.dialects")

WHERE = "when this model's provider does not speak the Responses API"
STATELESS = "this gateway is stateless and stores no responses"
NAMESPACE_SEPARATOR = "__"

# Read into the neutral request, or checked and refused (see `_refuse_unsupported`).
MAPPED_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature",
        "top_p", "reasoning", "stream", "store", "previous_response_id", "conversation", "background",
        "prompt", "text", "include", "top_logprobs",
    }
)  # fmt: skip

# Ignored on the translated path, and why: they tune OpenAI's own service
# (prompt_cache_*, service_tier, truncation, client_metadata), identify the end
# user (user, safety_identifier), are echoed only (metadata), or cannot change a
# one-turn answer here (parallel_tool_calls, max_tool_calls, stream_options).
# ``include`` is ignored except for logprobs, which are refused: what else it
# asks for (encrypted reasoning, hosted tools' results) is never produced here.
IGNORED_FIELDS = frozenset(
    {
        "parallel_tool_calls", "metadata", "user", "safety_identifier", "prompt_cache_key",
        "prompt_cache_retention", "service_tier", "truncation", "stream_options", "max_tool_calls",
        "client_metadata",
    }
)  # fmt: skip

# Hosted web search tool types; dropped when cached-only, else refused (see the module doc).
WEB_SEARCH_TYPES = ("web_search", "web_search_preview")

# Input items that carry nothing another provider can use.
IGNORED_ITEMS = frozenset({"reasoning", "additional_tools"})  # additional_tools: read as tools


# -- tools ------------------------------------------------------------------------


class ToolTable:
    """The client's tools as neutral functions, and the way back from a neutral name.

    ``origin`` maps the neutral (flattened) name to (kind, namespace, name):
    kind is "function" or "custom"; namespace is None for top-level tools.
    """

    __slots__ = ("tools", "origin", "notes")

    def __init__(self, body: dict[str, Any]) -> None:
        self.tools: list[Tool] = []
        self.origin: dict[str, tuple[str, str | None, str]] = {}
        self.notes: list[str] = []  # what was dropped or flattened, for the call's log line
        raw = body.get("tools")
        if raw is not None and not isinstance(raw, list):
            raise bad_request("'tools' must be an array.", param="tools")
        for index, tool in enumerate(raw or []):
            self._add(tool, f"tools[{index}]", None, None)
        # Codex may add tools in the input (an ``additional_tools`` item) instead.
        items = body.get("input")
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict) and item.get("type") == "additional_tools":
                    extra = item.get("tools")
                    if not isinstance(extra, list):
                        raise bad_request(f"input[{i}].tools must be an array.", param=f"input[{i}].tools")
                    for index, tool in enumerate(extra):
                        self._add(tool, f"input[{i}].tools[{index}]", None, None, repeat_ok=True)

    def _add(
        self, tool: Any, where: str, namespace: str | None, group: str | None, repeat_ok: bool = False
    ) -> None:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace" and namespace is None:
            name = tool.get("name")
            members = tool.get("tools")
            if not isinstance(name, str) or not name or not isinstance(members, list):
                raise bad_request(f"{where} must have a 'name' and 'tools'.", param=where)
            described = tool.get("description")
            self.notes.append(f"namespace {name} flattened to {name}{NAMESPACE_SEPARATOR}<name>")
            for index, member in enumerate(members):
                self._add(member, f"{where}.tools[{index}]", name, described if isinstance(described, str) else None)
            return
        if kind in ("function", "custom"):
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise bad_request(f"{where} must have a 'name'.", param=f"{where}.name")
            flat = flat_name(namespace, name)
            if flat in self.origin:
                if repeat_ok:
                    return
                raise bad_request(
                    f"{where}: the tool name '{flat}' is given twice (namespaced tools are named "
                    f"'<namespace>{NAMESPACE_SEPARATOR}<name>' here).",
                    param=f"{where}.name",
                )
            description = tool.get("description") if isinstance(tool.get("description"), str) else None
            if group:
                description = f"{description}\n\n({namespace}: {group})" if description else f"({namespace}: {group})"
            if kind == "function":
                parameters = tool.get("parameters")
                if parameters is None:
                    parameters = {"type": "object", "properties": {}}
                elif not isinstance(parameters, dict):
                    raise bad_request(f"{where}.parameters must be a JSON Schema object.", param=f"{where}.parameters")
            else:
                description, parameters = _custom_function(description, tool.get("format"))
                self.notes.append(f"custom tool {flat} as a function of one string")
            self.origin[flat] = (kind, namespace, name)
            self.tools.append(Tool(name=flat, description=description, parameters=parameters))
            return
        if kind in WEB_SEARCH_TYPES or (isinstance(kind, str) and kind.startswith(WEB_SEARCH_TYPES)):
            if tool.get("external_web_access") is False:
                self.notes.append(f"{kind} tool (cached-only) dropped")
                return
            raise unsupported(
                f"{where}.type={kind}", WHERE + ": the gateway never runs a web search (Codex: web_search = \"cached\")"
            )
        raise unsupported(f"{where}.type={kind}", WHERE + " (function, namespace and custom tools are)")

    def call_item(self, flat: str) -> dict[str, Any]:
        """The name fields of an output item for a call to the neutral tool ``flat``."""
        kind, namespace, name = self.origin.get(flat, ("function", None, flat))
        fields: dict[str, Any] = {"type": "custom_tool_call" if kind == "custom" else "function_call", "name": name}
        if namespace is not None:
            fields["namespace"] = namespace
        return fields

    def is_custom(self, flat: str) -> bool:
        origin = self.origin.get(flat)
        return origin is not None and origin[0] == "custom"


def flat_name(namespace: str | None, name: str) -> str:
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def _custom_function(description: str | None, format: Any) -> tuple[str, dict[str, Any]]:
    """A freeform tool as a function of one string."""
    note = "Call this tool with its whole input as the string argument 'input'."
    if isinstance(format, dict) and format.get("type") == "grammar" and isinstance(format.get("definition"), str):
        note += f" The input must follow this {format.get('syntax') or ''} grammar:\n{format['definition']}"
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's input, as free text."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    return (f"{description}\n\n{note}" if description else note), parameters


def custom_input(arguments: str) -> str:
    """The freeform input inside a custom tool's neutral arguments (the raw text if it is not that)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


# -- the dialect ------------------------------------------------------------------


class OpenAIResponsesDialect(Dialect):
    name = "openai_responses"

    def credentials(self, headers: "Headers") -> str:
        return bearer_token(headers.get("authorization"))

    def validate(self, body: dict[str, Any]) -> tuple[str, bool]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("You must provide a model parameter (a string).", param="model")
        items = body.get("input")
        if isinstance(items, list):
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    raise bad_request(f"input[{index}] must be an object.", param=f"input[{index}]")
        elif not isinstance(items, str):
            raise bad_request("'input' must be a string or an array of input items.", param="input")
        if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
            raise bad_request("'stream' must be a boolean.", param="stream")
        if body.get("previous_response_id") is not None:
            raise bad_request(
                f"'previous_response_id' is not supported: {STATELESS}. "
                "Send the whole conversation in 'input', with 'store': false.",
                param="previous_response_id",
                code="unsupported_parameter",
            )
        if body.get("store") is True:
            raise bad_request(
                f"'store': true is not supported: {STATELESS}. Send 'store': false or leave it out.",
                param="store",
                code="unsupported_parameter",
            )
        if body.get("conversation") is not None:
            raise bad_request(f"'conversation' is not supported: {STATELESS}.", param="conversation",
                              code="unsupported_parameter")  # fmt: skip
        if body.get("background") is True:
            raise bad_request(f"'background': true is not supported: {STATELESS}.", param="background",
                              code="unsupported_parameter")  # fmt: skip
        return model, body.get("stream") is True

    def to_chat(self, body: dict[str, Any]) -> ChatRequest:
        _refuse_unsupported(body)
        notes = ignored_notes(body, MAPPED_FIELDS)
        table = ToolTable(body)
        notes.extend(table.notes)
        system: list[str] = []
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            if instructions:
                system.append(instructions)
        elif instructions is not None:
            raise bad_request("'instructions' must be a string.", param="instructions")
        messages = _input(body["input"], table, system)
        choice, choice_name = _tool_choice(body.get("tool_choice"))
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        if effort is not None and not isinstance(effort, str):
            raise bad_request("'reasoning.effort' must be a string.", param="reasoning.effort")
        return ChatRequest(
            messages=messages,
            system="\n\n".join(system) if system else None,
            tools=table.tools,
            tool_choice=choice,
            tool_choice_name=choice_name,
            max_tokens=positive_int(body, "max_output_tokens"),
            temperature=number(body, "temperature"),
            top_p=number(body, "top_p"),
            stream=body.get("stream") is True,
            reasoning_effort=effort,
            cache_key=cache_key(body),
            notes=notes,
        )

    def chat_answer(self, answer: ChatResponse, call: "Call") -> dict[str, Any]:
        table = ToolTable(call.body)
        output: list[dict[str, Any]] = []
        status, incomplete = _status(answer.finish)
        text: list[str] = []

        def flush() -> None:
            if text:
                output.append(_message_item(new_id("msg_"), "".join(text), status))
                text.clear()

        for part in answer.parts:
            if isinstance(part, TextPart):
                text.append(part.text)
            else:
                flush()
                output.append(_call_item(table, new_id("fc_"), part.id, part.name, part.arguments))
        flush()
        return _response(call, new_id("resp_"), int(time.time()), status, output, answer.usage or call.usage,
                         incomplete=incomplete)  # fmt: skip

    def stream_encoder(self, call: "Call") -> "ResponsesStreamEncoder":
        return ResponsesStreamEncoder(call)

    def error_frame(self, error: GatewayError) -> bytes:
        """Without the stream's state: an ``error`` event (prefer the encoder's ``response.failed``)."""
        event = {"type": "error", "sequence_number": 0, "code": error.code or error.type, "message": error.message,
                 "param": error.param}  # fmt: skip
        return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"


# -- stream -------------------------------------------------------------------------


class ResponsesStreamEncoder:
    """Neutral events as Responses stream events, one output item at a time.

    Text opens a ``message`` item; a tool call closes it and opens a
    ``function_call`` (or ``custom_tool_call``) item. Tool calls stay open
    until text or the finish comes (their fragments are tied by index, so
    interleaved fragments of parallel calls still land in the right item);
    every item is closed with its ``.done`` events before ``response.completed``. A failure after
    the start is written by `error_frame` here (``response.failed`` with this
    stream's id and next sequence number), which the SDK's stream helper
    requires; `OpenAIResponsesDialect.error_frame` is the stateless fallback.
    """

    def __init__(self, call: "Call") -> None:
        self.call = call
        self.table = ToolTable(call.body)
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self.seq = 0
        self.output: list[dict[str, Any] | None] = []  # finished items by output_index (None: still open)
        self.text: list[str] | None = None  # the open message item's text, if one is open
        self.text_id = ""
        self.text_index = 0
        self._text_head = b""
        self.calls: dict[int, dict[str, Any]] = {}  # neutral tool index -> open call item
        self.finish: str | None = None
        self.usage: "TokenUsage | None" = None

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.seq}
        data.update(fields)
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

    def _snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        output = [item for item in self.output if item is not None]
        return _response(self.call, self.id, self.created_at, status, output, self.usage, **extra)

    def start(self) -> bytes:
        response = self._snapshot("in_progress")
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def encode(self, event: "StreamEvent") -> bytes:
        if type(event) is TextDelta:
            if not event.text:
                return b""
            out = b"" if self.text is not None else self._open_message()
            self.text.append(event.text)  # type: ignore[union-attr]
            seq = self.seq
            self.seq += 1
            return out + (
                b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "sequence_number": '
                + str(seq).encode() + self._text_head + json.dumps(event.text).encode() + b', "logprobs": []}\n\n'
            )  # fmt: skip
        if type(event) is ToolCallDelta:
            item = self.calls.get(event.index)
            if item is None or not event.arguments:
                return b""
            if self.output[item["output_index"]] is not None:  # text came between: the call was closed
                log.warning("openai_responses: tool call %s got arguments after it was closed", item["call_id"])
                return b""
            item["arguments"] += event.arguments
            if item["custom"]:
                return b""  # written whole when the call closes (its input is inside the JSON arguments)
            return self._event(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": item["output_index"], "delta": event.arguments},
            )
        if type(event) is ToolCallStart:
            return self._open_call(event)
        if type(event) is Finish:
            self.finish = event.reason
            return self._close_all()
        if type(event) is UsageReport:
            self.usage = event.usage
        return b""

    def end(self) -> bytes:
        out = self._close_all()
        status, incomplete = _status(self.finish or "stop")
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, {"response": self._snapshot(status, incomplete=incomplete)})

    def error_frame(self, error: GatewayError) -> bytes:
        """``response.failed``: the items finished so far and the error, on this stream's response."""
        failure = {"code": _failure_code(error), "message": error.message}
        return self._event("response.failed", {"response": self._snapshot("failed", error=failure)})

    # -- items ----------------------------------------------------------------------

    def _open_message(self) -> bytes:
        out = self._close_calls()
        self.text = []
        self.text_id = new_id("msg_")
        self.text_index = len(self.output)
        self.output.append(None)
        self._text_head = (
            f', "item_id": "{self.text_id}", "output_index": {self.text_index}, "content_index": 0, "delta": '
        ).encode()
        item = {"id": self.text_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return (
            out
            + self._event("response.output_item.added", {"output_index": self.text_index, "item": item})
            + self._event(
                "response.content_part.added",
                {"item_id": self.text_id, "output_index": self.text_index, "content_index": 0, "part": part},
            )
        )

    def _close_message(self) -> bytes:
        if self.text is None:
            return b""
        text = "".join(self.text)
        self.text = None
        where = {"item_id": self.text_id, "output_index": self.text_index, "content_index": 0}
        item = _message_item(self.text_id, text, "incomplete" if self.finish in ("length", "content_filter")
                             else "completed")  # fmt: skip
        self.output[self.text_index] = item
        return (
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            + self._event("response.content_part.done", {**where, "part": item["content"][0]})
            + self._event("response.output_item.done", {"output_index": self.text_index, "item": item})
        )

    def _open_call(self, event: ToolCallStart) -> bytes:
        out = self._close_message()
        if event.index in self.calls:
            return out
        custom = self.table.is_custom(event.name)
        index = len(self.output)
        self.output.append(None)
        item = {
            "id": new_id("ctc_" if custom else "fc_"),
            "output_index": index,
            "call_id": event.id,
            "name": event.name,
            "arguments": "",
            "custom": custom,
        }
        self.calls[event.index] = item
        added = _call_item(self.table, item["id"], event.id, event.name, "", status="in_progress")
        return out + self._event("response.output_item.added", {"output_index": index, "item": added})

    def _close_calls(self) -> bytes:
        out = b""
        for item in self.calls.values():
            index = item["output_index"]
            if self.output[index] is not None:
                continue
            arguments = item["arguments"]
            done = _call_item(self.table, item["id"], item["call_id"], item["name"], arguments)
            where = {"item_id": item["id"], "output_index": index}
            if item["custom"]:
                text = done["input"]
                if text:
                    out += self._event("response.custom_tool_call_input.delta", {**where, "delta": text})
                out += self._event("response.custom_tool_call_input.done", {**where, "input": text})
            else:
                if not arguments:  # a call without arguments still gets a JSON object, as OpenAI writes it
                    out += self._event("response.function_call_arguments.delta", {**where, "delta": "{}"})
                out += self._event(
                    "response.function_call_arguments.done", {**where, "arguments": done["arguments"],
                                                              "name": done["name"]}
                )  # fmt: skip
            self.output[index] = done
            out += self._event("response.output_item.done", {"output_index": index, "item": done})
        return out

    def _close_all(self) -> bytes:
        return self._close_message() + self._close_calls()


# -- answers ----------------------------------------------------------------------


def _status(finish: str) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _failure_code(error: GatewayError) -> str:
    """The closest of the codes a Response's ``error`` may carry (the SDK checks them)."""
    if error.status == 429:
        return "rate_limit_exceeded"
    if 400 <= error.status < 500 and error.status not in (408, 499):
        return "invalid_prompt"
    return "server_error"


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": "incomplete" if status == "incomplete" else "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _call_item(
    table: ToolTable, item_id: str, call_id: str, flat: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id}
    item.update(table.call_item(flat))
    item["call_id"] = call_id
    if item["type"] == "custom_tool_call":
        item["input"] = custom_input(arguments) if arguments else ""
    else:
        item["arguments"] = arguments or ("" if status == "in_progress" else "{}")
        item["status"] = status
    return item


def usage_fields(usage: "TokenUsage") -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _response(
    call: "Call",
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: "TokenUsage | None",
    *,
    error: dict[str, Any] | None = None,
    incomplete: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``response`` object with every key OpenAI writes, echoing the request's settings."""
    body = call.body
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": call.model_name,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, **({"verbosity": text["verbosity"]} if "verbosity" in text else {})},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage_fields(usage) if usage is not None else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


# -- request ----------------------------------------------------------------------


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("prompt") is not None:
        raise unsupported("prompt", WHERE + " (stored prompt templates live at OpenAI)")
    text = body.get("text")
    if text is not None:
        format = text.get("format") if isinstance(text, dict) else None
        kind = format.get("type") if isinstance(format, dict) else None
        if format is not None and kind != "text":
            raise unsupported(f"text.format.type={kind}", WHERE)
    if body.get("top_logprobs"):
        raise unsupported("top_logprobs", WHERE)
    include = body.get("include")
    if isinstance(include, list) and "message.output_text.logprobs" in include:
        raise unsupported("include=message.output_text.logprobs", WHERE)


def _input(raw: Any, table: ToolTable, system: list[str]) -> list[Message]:
    if isinstance(raw, str):
        return [Message("user", [TextPart(raw)])] if raw else []
    messages: list[Message] = []
    names: dict[str, str] = {}  # call id -> neutral tool name, for outputs that do not say it
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            _message(item, where, messages, system)
        elif kind in ("function_call", "custom_tool_call"):
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise bad_request(f"{where} must have a 'call_id' and a 'name'.", param=where)
            namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
            flat = flat_name(namespace, name)
            if kind == "function_call":
                arguments = item.get("arguments")
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments if arguments is not None else {})
            else:
                text = item.get("input")
                arguments = json.dumps({"input": text if isinstance(text, str) else ""})
            names[call_id] = flat
            append_message(messages, "assistant", [ToolCall(id=call_id, name=flat, arguments=arguments)])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise bad_request(f"{where} must have a 'call_id'.", param=f"{where}.call_id")
            text, images = _output(item.get("output"), f"{where}.output")
            result = ToolResult(call_id=call_id, content=text, name=names.get(call_id))
            append_message(messages, "user", [result, *images])
        elif kind in IGNORED_ITEMS:
            continue
        elif kind == "item_reference":
            raise unsupported(f"{where}.type=item_reference", f"here: {STATELESS}")
        else:
            raise unsupported(f"{where}.type={kind}", WHERE)
    return messages


def _message(item: dict[str, Any], where: str, messages: list[Message], system: list[str]) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        parts = _content(content, where, ("input_text", "text"))
        text = "".join(p.text for p in parts if isinstance(p, TextPart))
        if text:
            system.append(text)
    elif role == "user":
        append_message(messages, "user", _content(content, where, ("input_text", "text", "input_image")))
    elif role == "assistant":
        append_message(messages, "assistant", _content(content, where, ("output_text", "refusal", "input_text",
                                                                        "text")))  # fmt: skip
    else:
        raise bad_request(f"{where}.role '{role}' is not a valid role.", param=f"{where}.role")


def _content(content: Any, where: str, kinds: tuple[str, ...]) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of content parts.",
                          param=f"{where}.content")  # fmt: skip
    parts: list[Part] = []
    for index, part in enumerate(content):
        name = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            if kind in ("input_file", "input_audio", "input_image"):
                raise unsupported(f"{name}.type={kind}", WHERE)
            raise bad_request(f"{name} is not a valid content part here.", param=name)
        if kind == "input_image":
            parts.append(_image(part, name))
            continue
        text = part.get("refusal") if kind == "refusal" else part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"{name} must have a 'text'.", param=name)
        if text:
            parts.append(TextPart(text))
    return parts


def _image(part: dict[str, Any], name: str) -> ImagePart:
    if part.get("image_url") is None:
        raise unsupported(f"{name}.file_id", WHERE + " (send the image as 'image_url')")
    return image_from_url(part["image_url"], f"{name}.image_url")


def _output(output: Any, where: str) -> tuple[str, list[ImagePart]]:
    """A tool's output: its text, and the images it returned (they follow the result)."""
    if isinstance(output, str):
        return output, []
    if not isinstance(output, list):
        raise bad_request(f"{where} must be a string or an array of content items.", param=where)
    texts: list[str] = []
    images: list[ImagePart] = []
    for index, part in enumerate(output):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_image":
            images.append(_image(part, f"{where}[{index}]"))
        else:
            raise unsupported(f"{where}[{index}].type={kind}", WHERE)
    return "\n".join(texts), images


def _tool_choice(raw: Any) -> tuple[Any, str | None]:
    if raw is None:
        return None, None
    if raw in ("auto", "none", "required"):
        return raw, None
    if isinstance(raw, dict) and raw.get("type") in ("function", "custom"):
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("tool_choice.name must be a string.", param="tool_choice.name")
        namespace = raw.get("namespace") if isinstance(raw.get("namespace"), str) else None
        return "required", flat_name(namespace, name)
    kind = raw.get("type") if isinstance(raw, dict) else raw
    raise unsupported(f"tool_choice={kind}", WHERE)
