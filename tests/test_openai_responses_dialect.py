"""The OpenAI Responses dialect on the translated path (what Codex and the Agents SDK speak).

Requests shaped like Codex's (namespace, custom and web_search tools, developer
messages, reasoning items, the whole history as function_call items) map to
the neutral model; answers and streams are checked with the ``openai`` SDK's
types and its own stream accumulator.
"""

from __future__ import annotations

import json

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from starlette.datastructures import Headers

from aisix.call import Call, TokenUsage
from aisix.dialects.openai_responses import OpenAIResponsesDialect
from aisix.errors import GatewayError
from aisix.translate.neutral import (
    ChatResponse,
    Finish,
    ImagePart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    UsageReport,
)

dialect = OpenAIResponsesDialect()
EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = TokenUsage(prompt_tokens=900, completion_tokens=40, total_tokens=940, cached_tokens=800, reasoning_tokens=12)
SHELL_PARAMS = {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "required": ["command"]}  # fmt: skip

# Shaped after what Codex sends (issue 14): store false, developer messages, reasoning items,
# namespace / custom / cached web_search tools, an additional_tools item, the history as items.
CODEX = {
    "model": "claude",
    "instructions": "You are Codex.",
    "input": [
        {"type": "message", "id": "msg_a", "role": "developer",
         "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA..."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running ls."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "shell",
         "arguments": '{"command":["ls"]}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nsrc"},
        {"type": "function_call", "call_id": "call_2", "namespace": "mcp__docs", "name": "search",
         "arguments": '{"q":"x"}'},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "found"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]},
        {"type": "custom_tool_call", "call_id": "call_3", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_3", "output": "Done!"},
        {"type": "additional_tools", "role": "developer",
         "tools": [{"type": "function", "name": "view_image", "parameters": {"type": "object", "properties": {}}}]},
        {"role": "user", "content": "Now summarise."},
    ],
    "tools": [
        {"type": "function", "name": "shell", "description": "Runs a command", "strict": False,
         "parameters": SHELL_PARAMS},
        {"type": "namespace", "name": "mcp__docs", "description": "Docs server",
         "tools": [{"type": "function", "name": "search", "description": "Search docs",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]},
        {"type": "custom", "name": "apply_patch", "description": "Edit files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}},
        {"type": "web_search", "external_web_access": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "high", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199-session",
    "text": {"verbosity": "low"},
}  # fmt: skip


def call_for(body: dict) -> Call:
    return Call(key=None, model_name=body.get("model", "claude"), body=body, stream=True, dialect="openai_responses")


def refused(body: dict) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        dialect.validate(body)
        dialect.to_chat(body)
    assert info.value.status == 400
    return info.value


# -- request --------------------------------------------------------------------


def test_credentials_are_the_bearer_token() -> None:
    assert dialect.credentials(Headers({"authorization": "Bearer sk-aisix-x"})) == "sk-aisix-x"
    with pytest.raises(GatewayError):
        dialect.credentials(Headers({}))


def test_a_string_input_with_instructions() -> None:
    body = {"model": "claude", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 64,
            "temperature": 0.5, "top_p": 0.8}  # fmt: skip
    assert dialect.validate(body) == ("claude", False)
    request = dialect.to_chat(body)
    assert request.system == "Be brief."
    assert [(m.role, m.parts) for m in request.messages] == [("user", [TextPart("Hi")])]
    assert (request.max_tokens, request.temperature, request.top_p) == (64, 0.5, 0.8)


def test_a_codex_request_maps_to_neutral() -> None:
    assert dialect.validate(CODEX) == ("claude", True)
    request = dialect.to_chat(CODEX)
    assert request.system == "You are Codex.\n\n<permissions>sandboxed</permissions>"
    assert request.reasoning_effort == "high" and request.max_tokens is None and request.stream is True
    assert [m.role for m in request.messages] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    m = request.messages
    assert m[0].parts == [TextPart("List the files.")]  # the reasoning item is not carried
    assert m[1].parts == [TextPart("Running ls."), ToolCall("call_1", "shell", '{"command":["ls"]}')]
    assert m[2].parts == [ToolResult("call_1", "README.md\nsrc", name="shell")]
    assert m[3].parts == [ToolCall("call_2", "mcp__docs__search", '{"q":"x"}')]
    assert m[4].parts == [
        ToolResult("call_2", "found", name="mcp__docs__search"),
        ImagePart(media_type="image/png", data="iVBORw0KGgo="),  # the tool's image follows its result
    ]
    assert m[5].parts == [ToolCall("call_3", "apply_patch", json.dumps({"input": "*** Begin Patch"}))]
    assert m[6].parts == [ToolResult("call_3", "Done!", name="apply_patch"), TextPart("Now summarise.")]
    tools = {t.name: t for t in request.tools}
    # web_search (cached-only) is dropped; namespaced functions are flattened; the custom tool takes one string.
    assert list(tools) == ["shell", "mcp__docs__search", "apply_patch", "view_image"]
    assert tools["shell"].parameters == SHELL_PARAMS
    assert tools["mcp__docs__search"].description == "Search docs\n\n(mcp__docs: Docs server)"
    assert tools["apply_patch"].parameters["required"] == ["input"]
    assert "start: patch" in tools["apply_patch"].description
    assert request.tool_choice == "auto"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
    ],
)
def test_stateful_requests_get_a_clear_400(extra: dict, param: str) -> None:
    error = refused({"model": "claude", "input": "hi", **extra})
    assert error.param == param and "stateless" in error.message


def test_store_false_or_missing_is_fine() -> None:
    for body in ({"model": "claude", "input": "hi"}, {"model": "claude", "input": "hi", "store": False}):
        assert dialect.to_chat(body).messages[0].parts == [TextPart("hi")]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type=web_search"),
        ({"tools": [{"type": "web_search", "external_web_access": True}]}, "tools[0].type=web_search"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[0].type=file_search"),
        ({"tools": [{"type": "local_shell"}]}, "tools[0].type=local_shell"),
        ({"tools": [{"type": "function", "name": "a__b"},
                    {"type": "namespace", "name": "a", "description": "",
                     "tools": [{"type": "function", "name": "b"}]}]},
         "tools[1].tools[0].name"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice=web_search"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format.type=json_schema"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type=item_reference"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].type=input_file"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type=computer_call_output"),
    ],
)  # fmt: skip
def test_what_cannot_be_carried_is_a_400_naming_it(extra: dict, param: str) -> None:
    assert refused({"model": "claude", "input": "hi", **extra}).param == param


def test_a_named_tool_choice_is_required_with_that_name() -> None:
    request = dialect.to_chat({"model": "claude", "input": "hi", "tool_choice": {"type": "function", "name": "shell"}})
    assert (request.tool_choice, request.tool_choice_name) == ("required", "shell")


# -- complete answers -------------------------------------------------------------


def test_an_answer_is_a_valid_response_with_namespaced_and_custom_calls_restored() -> None:
    answer = ChatResponse(
        [
            TextPart("Let me look."),
            ToolCall("toolu_1", "mcp__docs__search", '{"q": "gateway"}'),
            ToolCall("toolu_2", "apply_patch", json.dumps({"input": "*** Begin Patch\n*** End Patch"})),
            ToolCall("toolu_3", "shell", ""),
        ],
        "tool_calls",
        USAGE,
    )
    body = dialect.chat_answer(answer, call_for(CODEX))
    response = Response.model_validate(body)
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.model == "claude" and response.error is None and response.incomplete_details is None
    kinds = [item.type for item in response.output]
    assert kinds == ["message", "function_call", "custom_tool_call", "function_call"]
    message, search, patch, shell = response.output
    assert message.content[0].text == "Let me look." and message.id.startswith("msg_")
    assert (search.name, search.namespace, search.call_id, search.arguments) == (
        "search", "mcp__docs", "toolu_1", '{"q": "gateway"}')  # fmt: skip
    assert (patch.name, patch.call_id, patch.input) == ("apply_patch", "toolu_2", "*** Begin Patch\n*** End Patch")
    assert shell.arguments == "{}" and shell.id.startswith("fc_")
    assert response.usage.input_tokens == 900 and response.usage.output_tokens == 40
    assert response.usage.input_tokens_details.cached_tokens == 800
    assert response.usage.output_tokens_details.reasoning_tokens == 12
    assert response.output_text == "Let me look."


def test_running_out_of_tokens_is_incomplete() -> None:
    body = dialect.chat_answer(ChatResponse([TextPart("Once upon")], "length", None), call_for({"model": "claude"}))
    response = Response.model_validate(body)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is None


# -- streams ---------------------------------------------------------------------


EVENTS = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallStart(0, "toolu_01", "shell"),
    ToolCallDelta(0, '{"comm'),
    ToolCallDelta(0, 'and": ["ls"'),
    ToolCallDelta(0, "]}"),
    ToolCallStart(1, "toolu_02", "apply_patch"),
    ToolCallDelta(1, '{"input": "*** Begin'),
    ToolCallDelta(1, ' Patch"}'),
    ToolCallStart(2, "toolu_03", "mcp__docs__search"),
    UsageReport(TokenUsage(900, 1, 901)),
    Finish("tool_calls"),
    UsageReport(USAGE),
]


def parse(stream: bytes) -> list:
    events = []
    for frame in stream.split(b"\n\n"):
        if not frame:
            continue
        head, data = frame.split(b"\n", 1)
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        event = EVENT.validate_python(json.loads(data[6:]))
        assert event.type == head[7:].decode()
        events.append(event)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def accumulate(events: list) -> list:
    """The events as the SDK's stream helper hands them out (it raises on any inconsistency)."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    return [out for event in events for out in state.handle_event(event)]


def run(body: dict, events: list) -> bytes:
    encoder = dialect.stream_encoder(call_for(body))
    return b"".join([encoder.start(), *(encoder.encode(e) for e in events), encoder.end()])


def test_a_stream_is_valid_events_that_reassemble_to_the_answer() -> None:
    events = parse(run(CODEX, EVENTS))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    # The text item is done before the first call is added; every item is added, then done, once.
    items = [(e.type.rsplit(".", 1)[1], e.output_index) for e in events if e.type.startswith("response.output_item.")]
    assert items[:3] == [("added", 0), ("done", 0), ("added", 1)]
    assert sorted(items) == sorted([("added", i) for i in range(4)] + [("done", i) for i in range(4)])
    assert all(items.index(("added", i)) < items.index(("done", i)) for i in range(4))
    assert "response.custom_tool_call_input.done" in kinds and "response.function_call_arguments.delta" in kinds
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    # The SDK's own accumulator (behind `client.responses.stream`) rebuilds the answer from the deltas.
    handled = accumulate(events)
    assert [e.snapshot for e in handled if e.type == "response.output_text.delta"][-1] == "Let me check."
    assert [e.snapshot for e in handled if e.type == "response.function_call_arguments.delta"][-2] == (
        '{"command": ["ls"]}'
    )
    final = handled[-1].response
    assert final.output_text == "Let me check."
    shell, patch, search = final.output[1:]
    assert (shell.type, shell.call_id, shell.name, shell.arguments) == ("function_call", "toolu_01", "shell",
                                                                        '{"command": ["ls"]}')  # fmt: skip
    assert (patch.type, patch.name, patch.input) == ("custom_tool_call", "apply_patch", "*** Begin Patch")
    assert (search.name, search.namespace, search.arguments) == ("search", "mcp__docs", "{}")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta"
                     and e.item_id == shell.id)  # fmt: skip
    assert deltas == shell.arguments
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Let me check."
    # What Codex reads: each item whole in output_item.done, and usage in response.completed.
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [i.type for i in done] == ["message", "function_call", "custom_tool_call", "function_call"]
    assert final.usage.input_tokens == 900 and final.usage.total_tokens == 940
    assert final.status == "completed"


def test_interleaved_fragments_of_parallel_calls_land_in_their_items() -> None:
    events = [ToolCallStart(0, "c0", "shell"), ToolCallStart(1, "c1", "shell"), ToolCallDelta(1, '{"command": '),
              ToolCallDelta(0, '{"command": ["a"]}'), ToolCallDelta(1, '["b"]}'), Finish("tool_calls")]  # fmt: skip
    final = accumulate(parse(run({"model": "claude"}, events)))[-1].response
    assert [(i.call_id, i.arguments) for i in final.output] == [
        ("c0", '{"command": ["a"]}'),
        ("c1", '{"command": ["b"]}'),
    ]


def test_a_length_stop_ends_with_response_incomplete() -> None:
    events = parse(run({"model": "claude"}, [TextDelta("Once"), Finish("length")]))
    accumulate(events)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_an_error_mid_stream_is_response_failed_on_the_same_response() -> None:
    encoder = dialect.stream_encoder(call_for({"model": "claude"}))
    out = encoder.start() + encoder.encode(TextDelta("Hal"))
    out += encoder.error_frame(GatewayError(529, "Overloaded", type="api_error", code="overloaded_error"))
    events = parse(out)
    accumulate(events)
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.id == events[0].response.id
    assert (failed.response.error.code, failed.response.error.message) == ("server_error", "Overloaded")


def test_a_429_mid_stream_says_rate_limit() -> None:
    encoder = dialect.stream_encoder(call_for({"model": "claude"}))
    events = parse(encoder.start() + encoder.error_frame(GatewayError(429, "Rate limit reached.")))
    assert events[-1].response.error.code == "rate_limit_exceeded"


def test_the_stateless_error_frame_is_a_valid_error_event() -> None:
    frame = dialect.error_frame(GatewayError(502, "Upstream failed.", type="api_error", code="upstream_error"))
    event = parse(frame)[0]
    assert event.type == "error" and event.message == "Upstream failed." and event.code == "upstream_error"


def test_error_body_is_openais_four_keys() -> None:
    body = dialect.error_body(GatewayError(400, "bad", param="input", code="x"))
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": "x"}}
