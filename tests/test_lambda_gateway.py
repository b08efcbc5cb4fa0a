"""The gateway on the Lambda streaming path: handler:app in the real runtime loop (a subprocess),
against the runtime API emulator, moto and the mock upstream — the bytes Lambda would receive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aisix.auth import hash_key, issue_key, key_id_for
from aisix.local.function_url import function_url_event
from aisix.local.lambda_emulator import EmulatorThread, lambda_environment
from conftest import CHAT, eventually, sse_events, wait_for_fresh_window

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def function(tmp_path, store, upstream):
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  - name: my-gpt4-mini\n"
        "    model: gpt-4o-mini\n"
        f"    base_url: {upstream.base_url}\n"
        "    timeout: 5\n"
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
            PYTHONPATH=str(ROOT),
        )
        process = subprocess.Popen([sys.executable, "-m", "aisix.lambda_runtime", "handler:app"], cwd=ROOT, env=env)

        def invoke(body: dict | None = None, secret: str | None = None, path: str = "/v1/chat/completions",
                   **options):
            headers = [("host", "abc.lambda-url.us-east-1.on.aws"), ("content-type", "application/json")]
            if secret:
                headers.append(("authorization", f"Bearer {secret}"))
            method = "POST" if body is not None else "GET"
            raw = json.dumps(body).encode() if body is not None else b""
            event = function_url_event(method, path, headers, raw, source_ip="203.0.113.9", url_id="abc",
                                       region="us-east-1", request_id="r")
            invocation = emu.invoke(event, **options)
            deadline = time.monotonic() + 30
            while not invocation.finished.wait(0.05):
                assert process.poll() is None, "the runtime process died"
                assert time.monotonic() < deadline, "no answer in time"
            return invocation

        yield invoke
        process.terminate()
        process.wait(10)


def test_chunks_stream_through_the_runtime_as_the_upstream_produces_them(function, store):
    secret, _ = issue_key(store, "lambda", rpm=100, tpm=100_000)
    words, delay = 5, 0.2
    inv = function({**CHAT, "stream": True, "mock": {"words": words, "delay": delay}}, secret)
    assert inv.streamed
    prelude = inv.prelude
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"].startswith("text/event-stream")
    assert prelude["headers"]["x-ratelimit-limit-requests"] == "100"
    events = sse_events(inv.payload.decode())
    assert events[-1] == "[DONE]"
    content_arrivals = [c.at for c in inv.chunks if b'"content": "' in c.data and b'"content": ""' not in c.data]
    assert len(content_arrivals) == words, "one runtime chunk per upstream event"
    gaps = [b - a for a, b in zip(content_arrivals, content_arrivals[1:])]
    assert min(gaps) > delay * 0.5, gaps
    assert not inv.trailers.get("Lambda-Runtime-Function-Error-Type".lower()) and inv.error is None


def test_one_warm_process_serves_invocations_in_a_row_and_counts_them_in_dynamodb(function, store):
    wait_for_fresh_window()
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
    window = store.read_window(key_id_for(hash_key(secret)))
    assert window.requests == 3
    assert window.tokens == sum(totals), "usage is written before each invocation returns"


def test_refusals_before_the_stream_are_http_errors(function, store):
    wait_for_fresh_window()
    assert function({**CHAT, "stream": True}).prelude["statusCode"] == 401
    secret, _ = issue_key(store, "lambda", rpm=1)
    not_found = function({**CHAT, "model": "nope", "stream": True}, secret)
    assert not_found.prelude["statusCode"] == 404
    assert json.loads(not_found.payload)["error"]["code"] == "model_not_found"
    assert function({**CHAT, "stream": True}, secret).prelude["statusCode"] == 200
    limited = function({**CHAT, "stream": True}, secret)
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
    assert eventually(lambda: store.read_window(key_id_for(hash_key(secret))).tokens) > 0


def test_a_stream_nearing_the_deadline_ends_cleanly_and_is_charged(function, store):
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    inv = function({**CHAT, "stream": True, "mock": {"words": 40, "delay": 0.2}}, secret, timeout_ms=3000)
    events = sse_events(inv.payload.decode())
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    assert inv.error is not None and inv.error["type"] == "Function.UpstreamTimeout"
    assert len(events) > 3, "what came before the deadline was relayed"
    assert store.read_window(key_id_for(hash_key(secret))).tokens > 0
