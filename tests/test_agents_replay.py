"""Claude Code and Codex, replayed: requests recorded from the real CLIs (tests/fixtures/agents/) sent
through one gateway to every provider, streamed and not, with the CLI's own headers.

What a user of the CLI would notice is asserted on both sides:
* the client gets a complete answer in its own dialect, checked with the official SDK's types
  (Anthropic's Message and stream events; the Responses API's Response and stream events), and a
  tool round trip works: the first request is answered with a call to the CLI's own shell tool with
  the arguments the mock was told to use, the second (carrying the tool's result) with words quoting it;
* what reached each provider's mock: Anthropic to Anthropic is a pass-through (body as sent but the
  model, betas and version headers untouched, ``?beta=true`` kept); elsewhere no ``anthropic-beta``,
  no ``metadata.user_id`` in any field, thinking and effort mapped to the provider's setting where it
  has one (and only for models that take one), cache markers mapped to the provider's caching or
  dropped, Codex's cached-only ``web_search`` never sent, namespace tools flattened, system and
  developer messages in the system prompt, the tool result paired with its call;
* usage is charged, and a translated call logs one line naming what it dropped or mapped.

One gateway (`sdk_stack.start_stack`, with a few extra models) serves the whole module.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator

import anthropic.types
import httpx2
import openai.types.responses
import pydantic
import pytest

import sdk_stack
from sdk_stack import TEXT, Stack, start_stack

FIXTURES = Path(__file__).parent / "fixtures" / "agents"
# The five local aliases' providers, by the stack's alias for each.
PROVIDERS = ("openai", "azure", "anthropic", "bedrock", "gemini")
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
EVERY_PROVIDER = pytest.mark.parametrize("provider", PROVIDERS)
CLIS = pytest.mark.parametrize("cli", ["claude-code", "codex"])

# Models the stack does not have, for rules that depend on the model: a reasoning model at OpenAI,
# Claude and Nova 2 on Bedrock (no max_tokens key: the defaults apply), a Gemini 3 model.
EXTRA_MODELS = {
    "o4": {"provider": "openai", "model": "o4-mini", "mock": "openai"},
    "bedrock-claude": {"provider": "bedrock", "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                       "mock": "bedrock"},
    "nova-2": {"provider": "bedrock", "model": "us.amazon.nova-2-lite-v1:0", "mock": "bedrock"},
    "gemini-3": {"provider": "gemini", "model": "gemini-3-pro-preview", "mock": "gemini"},
}
MOCK_OF = {"openai": "openai", "azure": "azure", "anthropic": "anthropic", "bedrock": "bedrock", "gemini": "gemini",
           **{name: spec["mock"] for name, spec in EXTRA_MODELS.items()}}
KIND_OF = {name: name for name in PROVIDERS} | {name: spec["provider"] for name, spec in EXTRA_MODELS.items()}

DEVICE_ID = "0" * 64  # Claude Code's metadata.user_id holds it: it must never reach another provider
SHELL_TOOL = {"claude-code": "Bash", "codex": "exec_command"}


@pytest.fixture(scope="module")
def stack(moto_endpoint: str) -> Iterator[Stack]:
    original = sdk_stack.model_entries

    def entries(urls: dict[str, str]) -> list[dict[str, Any]]:
        extra = []
        for name, spec in EXTRA_MODELS.items():
            entry = {"name": name, "provider": spec["provider"], "model": spec["model"],
                     "base_url": urls[spec["mock"]] + ("/v1" if spec["provider"] == "openai" else ""), "timeout": 10}
            if spec["provider"] == "bedrock":
                entry["region"] = "us-east-1"
            else:
                entry["api_key_env"] = {"openai": "MATRIX_OPENAI_KEY", "gemini": "MATRIX_GEMINI_KEY"}[spec["provider"]]
            extra.append(entry)
        return original(urls) + extra

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sdk_stack, "model_entries", entries)
        with start_stack(moto_endpoint) as running:
            yield running


# -- replaying ---------------------------------------------------------------------------------


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Replay:
    """One recorded request sent to ``model``: the client's answer and what reached the upstream."""

    def __init__(self, stack: Stack, name: str, model: str, stream: bool, body: dict[str, Any] | None = None,
                 secret: str | None = None) -> None:
        recorded = fixture(name)
        self.recorded = recorded
        self.sent = copy.deepcopy(body if body is not None else recorded["body"])
        self.sent["model"] = model
        self.sent["stream"] = stream
        self.secret = secret or stack.key()
        headers = dict(recorded["headers"])
        if "x-api-key" in headers:
            headers["x-api-key"] = self.secret
        else:
            headers["authorization"] = f"Bearer {self.secret}"
        query = f"?{recorded['query']}" if recorded["query"] else ""
        mock = stack.mocks[MOCK_OF[model]]
        before = len(mock.requests)
        with httpx2.Client(transport=stack.pool, timeout=30) as client:
            self.response = client.post(stack.url + recorded["path"] + query, headers=headers,
                                        content=json.dumps(self.sent).encode())
        self.upstream = mock.requests[before:]
        self.stream = stream
        self.dialect = "anthropic" if recorded["path"] == "/v1/messages" else "responses"

    @property
    def request(self) -> dict[str, Any]:
        """What reached the upstream (one request per replay)."""
        assert len(self.upstream) == 1, self.upstream
        return self.upstream[0]

    @property
    def body(self) -> dict[str, Any]:
        return self.request.get("json") or self.request.get("body")

    # -- the client's answer, validated with the official SDK's types --------------------------

    def answer(self) -> dict[str, Any]:
        """text, tool calls [(name, namespace, arguments)] and the usage total of a valid, complete answer."""
        assert self.response.status_code == 200, self.response.text
        if self.dialect == "anthropic":
            return self._message()
        return self._response()

    def _events(self) -> list[tuple[str, dict[str, Any]]]:
        events = []
        for block in self.response.text.split("\n\n"):
            name = data = None
            for line in block.split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
            if data:
                events.append((name or "", json.loads(data)))
        return events

    def _message(self) -> dict[str, Any]:
        if not self.stream:
            message = anthropic.types.Message.model_validate(self.response.json())
        else:
            adapter = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
            raw = self._events()
            assert all(data == {"type": "ping"} for name, data in raw if name == "ping")
            events = [adapter.validate_python(data) for name, data in raw if name != "ping"]
            assert events[0].type == "message_start" and events[-1].type == "message_stop"
            message = events[0].message
            content: list[dict[str, Any]] = []
            for event in events:
                if event.type == "content_block_start":
                    content.append(event.content_block.model_dump())
                    content[-1]["partial"] = ""
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    content[-1]["text"] += event.delta.text
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    content[-1]["partial"] += event.delta.partial_json
                elif event.type == "message_delta":
                    message.stop_reason = event.delta.stop_reason
                    message.usage.output_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        message.usage.input_tokens = event.usage.input_tokens
            for block in content:
                if block["type"] == "tool_use":
                    block["input"] = json.loads(block["partial"] or "{}")
                block.pop("partial")
            message = anthropic.types.Message.model_validate({**message.model_dump(), "content": content})
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [(block.name, None, block.input) for block in message.content if block.type == "tool_use"]
        usage = message.usage
        total = (usage.input_tokens + usage.output_tokens + (usage.cache_read_input_tokens or 0)
                 + (usage.cache_creation_input_tokens or 0))
        assert message.stop_reason == ("tool_use" if calls else "end_turn")
        return {"text": text, "calls": calls, "total": total, "id": [b.id for b in message.content
                                                                      if b.type == "tool_use"]}

    def _response(self) -> dict[str, Any]:
        if not self.stream:
            response = openai.types.responses.Response.model_validate(self.response.json())
        else:
            adapter = pydantic.TypeAdapter(openai.types.responses.ResponseStreamEvent)
            events = [adapter.validate_python(data) for _, data in self._events()]
            assert events[0].type == "response.created" and events[-1].type == "response.completed"
            response = events[-1].response
        assert response.status == "completed"
        calls = []
        for item in response.output:
            if item.type == "function_call":
                calls.append((item.name, item.namespace, json.loads(item.arguments)))
            elif item.type == "custom_tool_call":
                calls.append((item.name, None, item.input))
        assert response.usage is not None
        return {"text": response.output_text, "calls": calls, "total": response.usage.total_tokens}


def directive(tool: str, arguments: dict[str, Any]) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(arguments).encode()).decode().rstrip("=")
    return f"#mock tool={tool} args={encoded}"


def recorded_arguments(name: str) -> dict[str, Any]:
    """The arguments the recorded prompt's directive asks the mock to call the shell tool with."""
    encoded = re.search(r"#mock tool=\S+ args=(\S+)", json.dumps(fixture(name)["body"])).group(1)
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def upstream_text(replay: Replay) -> str:
    return json.dumps(replay.body, ensure_ascii=False)


def system_prompt(replay: Replay, model: str) -> str:
    """The system prompt as the provider received it."""
    body, kind = replay.body, KIND_OF[model]
    if kind in ("openai", "azure"):
        assert [m["role"] for m in body["messages"]].count("system") == 1
        return body["messages"][0]["content"]
    if kind == "anthropic":
        system = body["system"]
        return system if isinstance(system, str) else "".join(block["text"] for block in system)
    if kind == "bedrock":
        return "".join(block.get("text", "") for block in body["system"])
    return "".join(part["text"] for part in body["systemInstruction"]["parts"])


def tool_names(replay: Replay, model: str) -> list[str]:
    body, kind = replay.body, KIND_OF[model]
    if kind in ("openai", "azure"):
        return [tool["function"]["name"] for tool in body["tools"]]
    if kind == "anthropic":
        return [tool["name"] for tool in body["tools"]]
    if kind == "bedrock":
        return [tool["toolSpec"]["name"] for tool in body["toolConfig"]["tools"] if "toolSpec" in tool]
    return [d["name"] for tools in body["tools"] for d in tools.get("functionDeclarations", [])]


# -- a prompt ---------------------------------------------------------------------------------


@CLIS
@EVERY_PROVIDER
@STREAMED
def test_a_prompt_gets_a_complete_answer_in_the_clis_own_dialect(stack: Stack, cli: str, provider: str,
                                                                  stream: bool, caplog: pytest.LogCaptureFixture
                                                                  ) -> None:
    caplog.set_level(logging.INFO, logger="aisix.translate")
    replay = Replay(stack, f"{cli}-prompt", provider, stream)
    answer = replay.answer()
    assert answer["text"] == TEXT and answer["calls"] == []
    stack.charged(replay.secret, answer["total"])
    lines = [r.getMessage() for r in caplog.records if r.name == "aisix.translate"]
    passthrough = cli == "claude-code" and provider == "anthropic"
    assert len(lines) == (0 if passthrough else 1), lines
    if cli == "claude-code" and not passthrough:
        assert "dropped context_management, metadata" in lines[0]
        assert "role=system message(s) moved into the system prompt" in lines[0]
    if cli == "codex":
        assert "web_search tool (cached-only) dropped" in lines[0]
        assert "namespace multi_agent_v1 flattened" in lines[0]


# -- what reached the upstream -------------------------------------------------------------------


@STREAMED
def test_anthropic_to_anthropic_is_a_pass_through(stack: Stack, stream: bool) -> None:
    for name in ("claude-code-prompt", "claude-code-tool-2"):
        replay = Replay(stack, name, "anthropic", stream)
        replay.answer()
        request, recorded = replay.request, replay.recorded
        assert request["query"] == "beta=true"
        for header in ("anthropic-beta", "anthropic-version"):
            assert request["headers"][header] == recorded["headers"][header]
        assert request["headers"]["x-api-key"] == "sk-ant-upstream"  # the gateway's key, not the client's
        assert replay.body == {**replay.sent, "model": "claude-sonnet-4-5"}


@EVERY_PROVIDER
def test_claude_code_translated_carries_no_anthropic_only_settings(stack: Stack, provider: str) -> None:
    if provider == "anthropic":
        pytest.skip("pass-through (the test above)")
    replay = Replay(stack, "claude-code-tool-2", provider, True)
    replay.answer()
    assert not any(name.startswith("anthropic") for name in replay.request["headers"])
    text = upstream_text(replay)
    assert DEVICE_ID not in text and "safety_identifier" not in text
    assert not {"user", "metadata", "user_id"} & set(replay.body)  # metadata.user_id as no field at all
    assert "context_management" not in text and "cache_control" not in text
    # The role=system message Claude Code puts in `messages` is part of the system prompt.
    assert "Available agent types for the Agent tool" in system_prompt(replay, provider)
    assert "Bash" in tool_names(replay, provider)


@CLIS
@pytest.mark.parametrize("model", ["openai", "azure", "o4", "anthropic", "bedrock", "bedrock-claude", "nova-2",
                                   "gemini"])
def test_thinking_and_effort_reach_the_providers_reasoning_setting_where_it_has_one(
        stack: Stack, cli: str, model: str) -> None:
    """Claude Code asks for adaptive thinking with effort high; Codex asks for no effort (summary only)."""
    if cli == "claude-code" and model == "anthropic":
        pytest.skip("pass-through")
    body = fixture(f"{cli}-prompt")["body"]
    if cli == "codex":
        body = {**body, "reasoning": {"effort": "high", "summary": "auto"}}
    replay = Replay(stack, f"{cli}-prompt", model, True, body=body)
    replay.answer()
    sent = replay.body
    expected: dict[str, Any] = {
        "openai": ("reasoning_effort", None),  # gpt-4o-mini is no reasoning model: OpenAI would refuse it
        "azure": ("reasoning_effort", None),
        "o4": ("reasoning_effort", "high"),
        "anthropic": ("thinking", {"type": "enabled", "budget_tokens": 16384}),
        "bedrock": ("additionalModelRequestFields", None),  # Nova Lite (v1) takes no reasoning setting
        "bedrock-claude": ("additionalModelRequestFields", {"thinking": {"type": "enabled", "budget_tokens": 16384}}),
        "nova-2": ("additionalModelRequestFields", {"reasoningConfig": {"type": "enabled",
                                                                        "maxReasoningEffort": "high"}}),
        "gemini": ("generationConfig", None),
    }
    key, value = expected[model]
    if model == "gemini":
        assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}
    else:
        assert sent.get(key) == value


def test_thinking_is_not_sent_when_the_turn_continues_a_tool_call(stack: Stack) -> None:
    """The tool call's thinking block never reaches a client through translation, and Claude refuses a tool
    loop with thinking on but without it: that turn is sent without thinking (and answered)."""
    replay = Replay(stack, "claude-code-tool-2", "bedrock-claude", False)
    assert "Tool result:" in replay.answer()["text"]
    assert "additionalModelRequestFields" not in replay.body


@pytest.mark.parametrize("model", ["bedrock", "bedrock-claude"])
def test_cache_control_becomes_bedrock_cache_points(stack: Stack, model: str) -> None:
    replay = Replay(stack, "claude-code-tool-2", model, True)
    replay.answer()
    sent = replay.body
    assert sent["system"][-1] == {"cachePoint": {"type": "default"}}
    last = sent["messages"][-1]["content"]  # Claude Code marks its tool_result
    assert "toolResult" in last[0] and last[1] == {"cachePoint": {"type": "default"}}
    assert json.dumps(sent).count("cachePoint") <= 4


@EVERY_PROVIDER
def test_codex_translated_carries_no_hosted_search_and_flat_tools(stack: Stack, provider: str) -> None:
    replay = Replay(stack, "codex-tool-2", provider, True)
    replay.answer()
    names = tool_names(replay, provider)
    assert "web_search" not in names and "multi_agent_v1__spawn_agent" in names and "exec_command" in names
    text = upstream_text(replay)
    assert "web_search" not in text.replace("web_search_", "")  # no hosted tool type anywhere
    assert "googleSearch" not in text and "client_metadata" not in text and "00000000-0000" not in text
    assert "prompt_cache_key" not in text  # a loopback server is not OpenAI: the key is OpenAI's only
    # Codex's developer messages are the system prompt.
    assert "You are a coding agent running in the Codex CLI" in system_prompt(replay, provider)


# -- a tool round trip ---------------------------------------------------------------------------


def tool_result_pairing(replay: Replay, model: str) -> tuple[str, str, str]:
    """(the call's id or name, the result's id or name, the result's text) as the upstream received them."""
    body, kind = replay.body, KIND_OF[model]
    if kind in ("openai", "azure"):
        call = [m for m in body["messages"] if m.get("tool_calls")][-1]["tool_calls"][-1]
        result = body["messages"][-1]
        assert result["role"] == "tool"
        return call["id"], result["tool_call_id"], result["content"]
    if kind == "anthropic":
        call = body["messages"][-2]["content"][-1]
        result = body["messages"][-1]["content"][0]
        return call["id"], result["tool_use_id"], result["content"]
    if kind == "bedrock":
        call = [b for b in body["messages"][-2]["content"] if "toolUse" in b][-1]["toolUse"]
        result = body["messages"][-1]["content"][0]["toolResult"]
        return call["toolUseId"], result["toolUseId"], result["content"][0]["text"]
    call = [p for p in body["contents"][-2]["parts"] if "functionCall" in p][-1]["functionCall"]
    result = body["contents"][-1]["parts"][0]["functionResponse"]
    return call["name"], result["name"], result["response"]["result"]


@CLIS
@EVERY_PROVIDER
@STREAMED
def test_a_tool_round_trip(stack: Stack, cli: str, provider: str, stream: bool) -> None:
    first = Replay(stack, f"{cli}-tool", provider, stream)
    answer = first.answer()
    assert answer["calls"] == [(SHELL_TOOL[cli], None, recorded_arguments(f"{cli}-tool"))]
    stack.charged(first.secret, answer["total"])
    second = Replay(stack, f"{cli}-tool-2", provider, stream)
    answer = second.answer()
    assert answer["calls"] == []
    marker = recorded_arguments(f"{cli}-tool").get("command") or recorded_arguments(f"{cli}-tool")["cmd"]
    assert answer["text"].startswith("Tool result:") and marker.split()[-1] in answer["text"]
    if not (cli == "claude-code" and provider == "anthropic"):
        called, answered, content = tool_result_pairing(second, provider)
        assert called == answered and marker.split()[-1] in content


def test_a_tool_call_from_another_models_history_carries_googles_placeholder_signature_to_gemini_3(
        stack: Stack) -> None:
    """Gemini 3 refuses a function call in history without a thought signature; a call another provider made
    has none, so it goes with the placeholder Google documents for that case (ai.google.dev, "Thought
    signatures": ``skip_thought_signature_validator``)."""
    for cli in ("claude-code", "codex"):
        replay = Replay(stack, f"{cli}-tool-2", "gemini-3", True)
        assert "Tool result:" in replay.answer()["text"]
        call = [p for p in replay.body["contents"][-2]["parts"] if "functionCall" in p][0]
        assert call["thoughtSignature"] == "skip_thought_signature_validator"


@EVERY_PROVIDER
def test_codex_namespace_and_custom_tools_come_back_as_codex_sent_them(stack: Stack, provider: str) -> None:
    body = copy.deepcopy(fixture("codex-tool")["body"])
    body["tools"].append({"type": "custom", "name": "apply_patch", "description": "Edit files.",
                          "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}})
    text = json.dumps(body)
    spawn = directive("multi_agent_v1__wait_agent", {"timeout_ms": 5})
    replay = Replay(stack, "codex-tool", provider, True,
                    body=json.loads(re.sub(r"#mock tool=\S+ args=[A-Za-z0-9_-]+", spawn, text)))
    assert replay.answer()["calls"] == [("wait_agent", "multi_agent_v1", {"timeout_ms": 5})]
    patch = directive("apply_patch", {"input": "*** Begin Patch"})
    replay = Replay(stack, "codex-tool", provider, False,
                    body=json.loads(re.sub(r"#mock tool=\S+ args=[A-Za-z0-9_-]+", patch, text)))
    assert replay.answer()["calls"] == [("apply_patch", None, "*** Begin Patch")]


# -- max_tokens when the client sends none (Codex never does) -------------------------------------


@pytest.mark.parametrize(("model", "where", "expected"), [
    ("anthropic", ("max_tokens",), 32000),                         # Claude: Claude Code's own default
    ("bedrock-claude", ("inferenceConfig", "maxTokens"), 32000),   # the same rule on Bedrock
    ("bedrock", ("inferenceConfig", "maxTokens"), 512),            # the models file's max_tokens
    ("nova-2", ("inferenceConfig", "maxTokens"), None),            # Converse's default: the model's maximum
    ("gemini", ("generationConfig", "maxOutputTokens"), None),     # Gemini's default: the model's maximum
    ("openai", ("max_tokens",), None),
])
def test_max_tokens_when_codex_sends_none(stack: Stack, model: str, where: tuple[str, ...],
                                          expected: int | None) -> None:
    replay = Replay(stack, "codex-prompt", model, True)
    replay.answer()
    value: Any = replay.body
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    assert value == expected


# -- large bodies and fields the gateway does not know ---------------------------------------------


@pytest.mark.parametrize(("cli", "provider"), [("claude-code", "anthropic"), ("claude-code", "openai"),
                                               ("codex", "bedrock")])
def test_a_body_of_one_and_a_half_megabytes_is_accepted(stack: Stack, cli: str, provider: str) -> None:
    body = copy.deepcopy(fixture(f"{cli}-tool-2")["body"])
    padding = "aisix " * 250_000  # a long tool result, as a big file read would give
    if cli == "claude-code":
        body["messages"][-1]["content"][0]["content"] += "\n" + padding
    else:
        body["input"][-1]["output"] += "\n" + padding
    assert len(json.dumps(body)) > 1_500_000
    replay = Replay(stack, f"{cli}-tool-2", provider, True, body=body)
    assert "Tool result:" in replay.answer()["text"]


def test_a_top_level_field_of_a_newer_claude_code_is_dropped_with_a_log_line_not_refused(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aisix.translate")
    body = {**fixture("claude-code-prompt")["body"], "future_setting": {"on": True}, "top_k": 5}
    translated = Replay(stack, "claude-code-prompt", "gemini", True, body=body)
    assert translated.answer()["text"] == TEXT
    assert "future_setting" not in upstream_text(translated)
    lines = [r.getMessage() for r in caplog.records if r.name == "aisix.translate"]
    assert len(lines) == 1 and "future_setting" in lines[0] and "top_k" in lines[0]
    passed = Replay(stack, "claude-code-prompt", "anthropic", False, body=body)
    assert passed.answer()["text"] == TEXT and passed.body["future_setting"] == {"on": True}
