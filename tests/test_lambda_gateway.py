"""The gateway on the Lambda streaming path: handler:app in the real runtime loop (a subprocess),
against the runtime API emulator, moto and the mock upstream — the bytes Lambda would receive."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aisix.auth import hash_key, issue_key, key_id_for
from aisix.local.function_url import function_url_event
from aisix.local.lambda_emulator import EmulatorThread, lambda_environment
from conftest import CHAT, eventually, same_minute, sse_events, window_total

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def function(request, tmp_path, store, upstream):
    """Invoke ``handler:app`` in a runtime subprocess; ``invoke.shutdown()`` spins it down as Lambda does.

    Token charges are written at once (``AISIX_TOKEN_FLUSH_SECONDS=0``) unless a test
    parametrizes the fixture with other environment variables."""
    models = tmp_path / "models.yaml"
    overrides = dict(getattr(request, "param", {}))
    black_hole = None
    if overrides.pop("_black_hole", False):
        # A listener whose accept queue is full: a connection to it hangs, never accepted.
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler = socket.create_connection(server.getsockname())
        request.addfinalizer(server.close)
        request.addfinalizer(filler.close)
        black_hole = f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    gated = request.getfixturevalue("gated_upstream")(5) if overrides.pop("_gated", False) else None
    extra_models = overrides.pop("_models", "")
    models.write_text(
        "models:\n"
        "  - name: my-gpt4-mini\n"
        "    model: gpt-4o-mini\n"
        f"    base_url: {upstream.base_url}\n"
        "    timeout: 5\n"
        + (f"  - {{name: black-hole, model: m, base_url: '{black_hole}', timeout: 30}}\n" if black_hole else "")
        + (f"  - {{name: gated, model: m, base_url: '{gated.base_url}', timeout: 30}}\n" if gated else "")
        + (extra_models(request) if callable(extra_models) else extra_models)
    )
    with EmulatorThread() as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AISIX_", "AWS_LAMBDA_"))}
        env.update(lambda_environment(emu.address))
        env.update(
            AISIX_CONFIG=str(models),
            AISIX_KEYS_TABLE=store.keys_table,
            AISIX_COUNTERS_TABLE=store.counters_table,
            AISIX_DYNAMODB_ENDPOINT=store.client.meta.endpoint_url,
            AISIX_DEADLINE_MARGIN_SECONDS="1",
            AISIX_TOKEN_FLUSH_SECONDS="0",
            PYTHONPATH=str(ROOT),
        )
        env.update(overrides)
        process = subprocess.Popen([sys.executable, "-m", "aisix.lambda_runtime", "handler:app"], cwd=ROOT, env=env)

        def invoke(body: dict | None = None, secret: str | None = None, path: str = "/v1/chat/completions",
                   door: str = "function-url", **options):
            headers = [("host", "abc.lambda-url.us-east-1.on.aws"), ("content-type", "application/json")]
            if secret:
                headers.append(("authorization", f"Bearer {secret}"))
            headers.extend(options.pop("headers", []))
            method = "POST" if body is not None else "GET"
            raw = json.dumps(body).encode() if body is not None else b""
            event = function_url_event(method, path, headers, raw, source_ip="203.0.113.9", url_id="abc",
                                       region="us-east-1", request_id="r")
            if door == "http-api":  # the same payload 2.0 event through an HTTP API: answered buffered
                event["requestContext"]["domainName"] = "abc.execute-api.us-east-1.amazonaws.com"
            invocation = emu.invoke(event, **options)
            deadline = time.monotonic() + 30
            while not invocation.finished.wait(0.05):
                assert process.poll() is None, "the runtime process died"
                assert time.monotonic() < deadline, "no answer in time"
            return invocation

        invoke.shutdown = lambda: emu.shutdown(process, grace=30)  # type: ignore[attr-defined]
        invoke.emulator = emu  # type: ignore[attr-defined]
        invoke.gated = gated  # type: ignore[attr-defined]
        yield invoke
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("function", [{"_gated": True}], indirect=True)
def test_chunks_stream_through_the_runtime_as_the_upstream_produces_them(function, store):
    """The upstream (`conftest.GatedUpstream`) sends each event only once the previous one has
    reached the runtime API: a runtime that held chunks back would leave it waiting."""
    secret, _ = issue_key(store, "lambda", rpm=100, tpm=100_000)
    words, gated = 5, function.gated
    invocations = function.emulator.emulator.invocations
    gated.arrived = lambda i: any(f'"w{i} "'.encode() in c.data
                                  for inv in list(invocations.values()) for c in list(inv.chunks))
    inv = function({**CHAT, "model": "gated", "stream": True}, secret)
    assert inv.streamed
    prelude = inv.prelude
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"].startswith("text/event-stream")
    assert prelude["headers"]["x-ratelimit-limit-requests"] == "100"
    events = sse_events(inv.payload.decode())
    assert events[-1] == "[DONE]"
    content = [c.data for c in inv.chunks if b'"content": "w' in c.data]
    assert len(content) == words, "one runtime chunk per upstream event"
    assert gated.early == [], "the upstream had to send an event before the previous one reached Lambda"
    assert not inv.trailers.get("Lambda-Runtime-Function-Error-Type".lower()) and inv.error is None


def test_one_warm_process_serves_invocations_in_a_row_and_counts_them_in_dynamodb(function, store):
    secret, _ = issue_key(store, "lambda", rpm=10, tpm=100_000)
    totals = []
    for stream in (True, False, True):
        inv = function({**CHAT, "stream": stream, "stream_options": {"include_usage": True}} if stream
                       else CHAT, secret)
        assert inv.prelude["statusCode"] == 200
        if stream:
            totals.append(json.loads(sse_events(inv.payload.decode())[-2])["usage"]["total_tokens"])
        else:
            totals.append(json.loads(inv.payload)["usage"]["total_tokens"])
    key_id = key_id_for(hash_key(secret))
    # Written after the answer has ended, before the runtime asks for the next event.
    assert eventually(lambda: window_total(store, key_id).tokens == sum(totals)), window_total(store, key_id)
    assert window_total(store, key_id).requests == 3


@pytest.mark.parametrize("function", [{"AISIX_TOKEN_FLUSH_SECONDS": "600"}], indirect=True)
def test_token_charges_are_coalesced_across_invocations_and_written_at_shutdown(function, store):
    """No DynamoDB write per invocation for tokens; Lambda's SIGTERM at spin-down writes them all."""
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    key_id = key_id_for(hash_key(secret))
    totals = []
    for _ in range(3):
        inv = function({**CHAT, "stream": True, "stream_options": {"include_usage": True}}, secret)
        totals.append(json.loads(sse_events(inv.payload.decode())[-2])["usage"]["total_tokens"])
    assert window_total(store, key_id).tokens == 0, "charges wait in the instance, up to AISIX_TOKEN_FLUSH_SECONDS"
    names = [e.name for e in function.emulator.call(lambda: function.emulator.emulator.registered_extensions)]
    assert names == ["aisix-shutdown"], "an extension is registered, so that Lambda sends SIGTERM"
    assert function.shutdown(), "the runtime exited by itself after SIGTERM"
    assert window_total(store, key_id).tokens == sum(totals)


@pytest.mark.parametrize("function", [{"AISIX_TOKEN_FLUSH_SECONDS": "0.001"}], indirect=True)
def test_a_charge_older_than_the_flush_age_is_written_by_the_next_invocation(function, store):
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    key_id = key_id_for(hash_key(secret))
    first = function(CHAT, secret)
    assert first.prelude["statusCode"] == 200
    second = function(CHAT, secret)
    used = [json.loads(inv.payload)["usage"]["total_tokens"] for inv in (first, second)]
    assert eventually(lambda: window_total(store, key_id).tokens == sum(used)), window_total(store, key_id)


def test_refusals_before_the_stream_are_http_errors(function, store):
    assert function({**CHAT, "stream": True}).prelude["statusCode"] == 401

    def two_calls_on_a_fresh_key():
        secret, _ = issue_key(store, "lambda", rpm=1)
        not_found = function({**CHAT, "model": "nope", "stream": True}, secret)
        return not_found, function({**CHAT, "stream": True}, secret), function({**CHAT, "stream": True}, secret)

    # The runtime's windows follow the real clock: the RPM counts only if both calls fall in one minute.
    not_found, first, limited = same_minute(two_calls_on_a_fresh_key)
    assert not_found.prelude["statusCode"] == 404
    assert json.loads(not_found.payload)["error"]["code"] == "model_not_found"
    assert first.prelude["statusCode"] == 200
    assert limited.prelude["statusCode"] == 429
    assert limited.prelude["headers"]["retry-after"]
    assert json.loads(limited.payload)["error"]["code"] == "rate_limit_exceeded"
    assert limited.error is None, "a refusal is an HTTP answer, not a function error"


def test_mid_stream_failure_is_an_error_event_and_lambda_error_trailers(function, store):
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    inv = function({**CHAT, "stream": True, "mock": {"fail_after": 3}}, secret)
    events = sse_events(inv.payload.decode())
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"
    assert inv.error is not None and inv.error["type"] == "Function.UpstreamError"
    assert eventually(lambda: window_total(store, key_id_for(hash_key(secret))).tokens) > 0


def test_a_stream_nearing_the_deadline_ends_cleanly_and_is_charged(function, store):
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    inv = function({**CHAT, "stream": True, "mock": {"words": 40, "delay": 0.2}}, secret, timeout_ms=3000)
    events = sse_events(inv.payload.decode())
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    assert inv.error is not None and inv.error["type"] == "Function.UpstreamTimeout"
    assert len(events) > 3, "what came before the deadline was relayed"
    assert eventually(lambda: window_total(store, key_id_for(hash_key(secret))).tokens > 0)


# A call cut off before the upstream answers gets the same 504 whenever the app's deadline (the
# invocation's less AISIX_DEADLINE_MARGIN_SECONDS, 1 s here) falls: 2 s invocations leave it 1 s,
# and 0.5 s before the runtime's own safety net, as longer ones would.
CUT_OFF_MS = 2000


def buffered_answer(invocation) -> tuple[int, dict]:
    result = json.loads(invocation.body)
    return result["statusCode"], json.loads(result["body"])


def test_a_buffered_call_cut_off_by_the_deadline_answers_an_openai_error(function, store):
    """HTTP API door: the app ends the call before Lambda would, with a JSON error the SDKs parse."""
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    slow = {**CHAT, "mock": {"first_byte_delay": 20}}
    inv = function(slow, secret, door="http-api", timeout_ms=CUT_OFF_MS)
    assert not inv.streamed
    status, body = buffered_answer(inv)
    assert status == 504
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "upstream_timeout"


def test_a_streamed_call_cut_off_before_its_first_byte_answers_an_openai_error(function, store):
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    inv = function({**CHAT, "stream": True, "mock": {"first_byte_delay": 20}}, secret, timeout_ms=CUT_OFF_MS)
    assert inv.prelude["statusCode"] == 504
    assert json.loads(inv.payload)["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize("function", [{"_black_hole": True}], indirect=True)
def test_a_call_cut_off_while_connecting_is_not_charged(function, store):
    """The request never left (the upstream never accepted the connection): the 504 costs no tokens."""
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    for body, door in (({**CHAT, "model": "black-hole", "stream": True}, "function-url"),
                       ({**CHAT, "model": "black-hole"}, "http-api")):
        inv = function(body, secret, door=door, timeout_ms=CUT_OFF_MS)
        assert (inv.prelude["statusCode"] if inv.streamed else buffered_answer(inv)[0]) == 504
    used = json.loads(function(CHAT, secret).payload)["usage"]["total_tokens"]
    key_id = key_id_for(hash_key(secret))
    # Only the call that reached the upstream is charged (the others would add their prompt estimate).
    assert eventually(lambda: window_total(store, key_id).tokens == used), window_total(store, key_id)


def test_anthropic_messages_stream_through_the_runtime_translated(function, store):
    """An Anthropic client (Claude Code's protocol) on the Lambda streaming path, to an OpenAI-compatible
    model: Anthropic's event stream comes out, one runtime chunk per event, charged like any call."""
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    body = {"model": "my-gpt4-mini", "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": "Tell me a story"}]}
    inv = function(body, secret, path="/v1/messages")
    assert inv.prelude["statusCode"] == 200
    frames = [c.data for c in inv.chunks[1:] if c.data]  # after the prelude
    kinds = [line.split(b": ", 1)[1] for frame in frames for line in frame.split(b"\n") if line.startswith(b"event: ")]
    assert kinds[0] == b"message_start" and kinds[-1] == b"message_stop"
    assert b"content_block_delta" in kinds and b"message_delta" in kinds
    # One upstream event may become several Anthropic events (a block's start and its first delta),
    # written together; a chunk never ends inside an event.
    assert all(frame.endswith(b"\n\n") for frame in frames)
    text = "".join(json.loads(line[6:])["delta"]["text"] for frame in frames for line in frame.split(b"\n")
                   if line.startswith(b"data: ") and b'"text_delta"' in line)
    assert text
    key_id = key_id_for(hash_key(secret))
    assert eventually(lambda: store.read_window(key_id).tokens > 0)
    assert inv.error is None


def _provider_mocks(request) -> str:
    """Anthropic and Gemini mocks on loopback, as models-file entries (stopped after the test)."""
    from aisix.local.mocks.anthropic import AnthropicMock
    from aisix.local.mocks.gemini import GeminiMock
    from conftest import ServerThread

    anthropic, gemini = ServerThread(AnthropicMock()).start(), ServerThread(GeminiMock(api_key="g-key")).start()
    request.addfinalizer(anthropic.stop)
    request.addfinalizer(gemini.stop)
    os.environ.setdefault("TEST_GEMINI_KEY", "g-key")
    os.environ.setdefault("TEST_ANTHROPIC_KEY", "a-key")
    return (f"  - {{name: claude, provider: anthropic, model: claude-sonnet-4-5, base_url: '{anthropic.url}', "
            "api_key_env: TEST_ANTHROPIC_KEY, timeout: 10}\n"
            f"  - {{name: gemini, provider: gemini, model: gemini-2.5-flash, base_url: '{gemini.url}', "
            "api_key_env: TEST_GEMINI_KEY, timeout: 10}\n")


def _events(inv) -> list[tuple[str | None, dict]]:
    """(event name, data) of every SSE event the runtime wrote after the prelude."""
    out = []
    for chunk in inv.chunks[1:]:
        for block in chunk.data.decode().split("\n\n"):
            name = next((line[7:] for line in block.split("\n") if line.startswith("event: ")), None)
            data = "\n".join(line[6:] for line in block.split("\n") if line.startswith("data: "))
            if data and data != "[DONE]":
                out.append((name, json.loads(data)))
    return out


@pytest.mark.parametrize("function", [{"_models": _provider_mocks}], indirect=True)
def test_every_protocol_streams_through_the_runtime(function, store):
    """Each client protocol on the Lambda streaming path, passed through and translated."""
    secret, _ = issue_key(store, "lambda", tpm=1_000_000)
    prompt = [{"role": "user", "content": "Tell me a story"}]
    # Anthropic client → Anthropic (pass-through), with Claude Code's query and beta header.
    inv = function({"model": "claude", "max_tokens": 100, "stream": True, "messages": prompt}, secret,
                   path="/v1/messages?beta=true", headers=[("anthropic-beta", "claude-code-20250219")])
    names = [name for name, _ in _events(inv)]
    assert inv.prelude["statusCode"] == 200 and names[0] == "message_start" and names[-1] == "message_stop"
    # OpenAI chat client → Anthropic (translated).
    inv = function({"model": "claude", "stream": True, "messages": prompt}, secret)
    events = _events(inv)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for _, e in events if e.get("choices"))
    assert inv.payload.endswith(b"data: [DONE]\n\n")
    # Responses client → Gemini (translated).
    inv = function({"model": "gemini", "stream": True, "input": "Tell me a story"}, secret, path="/v1/responses")
    types = [e["type"] for _, e in _events(inv)]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    # Embeddings → Gemini (translated, buffered answer through the streaming door).
    inv = function({"model": "gemini", "input": ["a", "b"]}, secret, path="/v1/embeddings")
    answer = json.loads(inv.payload)
    assert [d["index"] for d in answer["data"]] == [0, 1] and answer["data"][0]["embedding"]
    key_id = key_id_for(hash_key(secret))
    assert eventually(lambda: store.read_window(key_id).requests >= 4)


AGENT_FIXTURES = ROOT / "tests" / "fixtures" / "agents"  # recorded from the real CLIs (tools/agents.py record)


@pytest.mark.parametrize("function", [{"_models": _provider_mocks}], indirect=True)
def test_coding_agents_tool_round_trip_through_the_runtime(function, store):
    """Claude Code's and Codex's recorded requests on the Lambda streaming path, to Anthropic (Claude Code:
    passed through) and Gemini (translated): the first turn comes back as a call to the CLI's own shell
    tool with the directive's arguments, the next turn (carrying the tool's output) as text quoting it."""
    secret, _ = issue_key(store, "lambda", tpm=10_000_000)
    for cli, path, tool in (("claude-code", "/v1/messages", "Bash"), ("codex", "/v1/responses", "exec_command")):
        for model in ("claude", "gemini"):
            first, second = (json.loads((AGENT_FIXTURES / f"{cli}-{name}.json").read_text())
                             for name in ("tool", "tool-2"))
            headers = [(k, v) for k, v in first["headers"].items()
                       if k not in ("x-api-key", "authorization", "accept-encoding", "content-type")]
            query = f"?{first['query']}" if first["query"] else ""
            inv = function({**first["body"], "model": model}, secret, path=path + query, headers=headers)
            events = _events(inv)
            assert inv.prelude["statusCode"] == 200 and inv.error is None, (cli, model)
            if cli == "claude-code":
                started = [e["content_block"] for _, e in events if e.get("type") == "content_block_start"]
                assert any(b["type"] == "tool_use" and b["name"] == tool for b in started), (cli, model)
                assert events[-1][1]["type"] == "message_stop"
            else:
                done = [e["item"] for _, e in events if e.get("type") == "response.output_item.done"]
                assert any(i["type"] == "function_call" and i["name"] == tool for i in done), (cli, model)
                assert events[-1][1]["type"] == "response.completed"
            inv = function({**second["body"], "model": model}, secret, path=path + query, headers=headers)
            events = _events(inv)
            if cli == "claude-code":
                text = "".join(e["delta"].get("text", "") for _, e in events if e.get("type") == "content_block_delta")
            else:
                text = "".join(e["delta"] for _, e in events if e.get("type") == "response.output_text.delta")
            assert text.startswith("Tool result:") and "aisix-agent-" in text, (cli, model, text[:200])
