"""Faults on the way to the upstream and from the client: what the client sees, what is charged.

Every row of docs/faults.md that is not about DynamoDB, security or fuzzing is proved here.
Scenarios are data (`UPSTREAM_FAULTS`) run through a `front` (how the test reaches a gateway),
so the same table can be run against the Lambda streaming runtime by adding a front: the
assertions only use HTTP, the mock upstream's own records and the DynamoDB counters. Checks
that need the gateway's process (its event loop's tasks, a patched limit) ask for
``front.in_process``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from aisix.passthrough import openai_chat as openai_passthrough
from aisix.app import create_app
from aisix.config import Settings, parse_config
from aisix.gateway import Gateway
from aisix.local.mock_upstream import STORY
from aisix.store import AsyncStore, Store, make_client
from conftest import CHAT, RunningGateway, ServerThread, eventually, free_port, sse_events
from faultkit import LoopProbe, RawClient, charged, content_of, estimate, lingering, settled

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak"


# --- fronts -----------------------------------------------------------------------------------


class Front:
    """How the tests reach gateways: ``start(config=..., hooks=..., **settings)`` returns a
    `RunningGateway` (``url``, ``key()``, ``client()``, ``store``); ``shared(...)`` reuses one
    started with the same arguments (keys keep tests apart). One table pair per module."""

    name = "local"
    in_process = True  # the gateway runs in the test process: hooks, task probes, patched limits

    def __init__(self, moto_endpoint: str, upstream: Any) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.store = Store(make_client(moto_endpoint, "us-east-1"), f"keys-{suffix}", f"counters-{suffix}")
        self.store.create_tables()
        self.moto_endpoint = moto_endpoint
        self.upstream = upstream
        self.started: list[RunningGateway] = []
        self.probes: dict[str, LoopProbe] = {}
        self._shared: dict[str, RunningGateway] = {}

    def start(self, config: dict[str, Any] | None = None, hooks: list[Any] | None = None,
              **settings: Any) -> RunningGateway:
        probe = LoopProbe()
        env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
        cfg = parse_config(config or fault_models(self.upstream.base_url), env)
        s = Settings(keys_table=self.store.keys_table, counters_table=self.store.counters_table,
                     dynamodb_endpoint=self.moto_endpoint,
                     **{"keepalive_seconds": 5.0, "key_cache_seconds": 0.5, "token_flush_seconds": 0, **settings})
        store = AsyncStore(Store(make_client(self.moto_endpoint, "us-east-1"), self.store.keys_table,
                                 self.store.counters_table))
        gateway = Gateway(s, cfg, store, hooks=[probe, *(hooks or [])])
        server = ServerThread(create_app(gateway)).start()
        running = RunningGateway(server.url, gateway, self.store, server)
        self.started.append(running)
        self.probes[running.url] = probe
        return running

    def shared(self, config: dict[str, Any] | None = None, **settings: Any) -> RunningGateway:
        signature = json.dumps([config, settings], sort_keys=True)
        if signature not in self._shared:
            self._shared[signature] = self.start(config, **settings)
        return self._shared[signature]

    def probe(self, gw: RunningGateway) -> LoopProbe:
        return self.probes[gw.url]

    def close(self) -> None:
        for running in self.started:
            running.server.stop()


class LambdaFront(Front):
    """The same gateways on the Lambda streaming path: ``handler:app`` in the real runtime loop
    (a subprocess) behind the runtime API emulator and its function-URL front door, which here
    passes a client's disconnect on (AWS does not: see docs/lambda.md)."""

    name = "lambda"
    in_process = False

    def __init__(self, moto_endpoint: str, upstream: Any, tmp: Any) -> None:
        super().__init__(moto_endpoint, upstream)
        self.tmp = tmp
        self.processes: list[Any] = []
        self.emulators: list[Any] = []

    def start(self, config: dict[str, Any] | None = None, hooks: list[Any] | None = None,
              **settings: Any) -> RunningGateway:
        import os
        import subprocess
        import sys

        import yaml

        from aisix.local.lambda_emulator import EmulatorThread, lambda_environment

        assert not hooks, "hooks need the in-process front"
        models = self.tmp / f"models-{uuid.uuid4().hex[:6]}.yaml"
        models.write_text(yaml.safe_dump(config or fault_models(self.upstream.base_url)))
        emulator = EmulatorThread(function_url=True, propagate_disconnect=True).__enter__()
        self.emulators.append(emulator)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AISIX_", "AWS_LAMBDA_"))}
        env.update(lambda_environment(emulator.address))
        env.update(
            TEST_UPSTREAM_KEY=UPSTREAM_KEY, AISIX_CONFIG=str(models), AISIX_KEYS_TABLE=self.store.keys_table,
            AISIX_COUNTERS_TABLE=self.store.counters_table, AISIX_DYNAMODB_ENDPOINT=self.moto_endpoint,
            AISIX_KEY_CACHE_SECONDS="0.5", AISIX_TOKEN_FLUSH_SECONDS="0",  # each charge written at once, as locally
            **{f"AISIX_{name.upper()}": str(value) for name, value in settings.items()},
        )
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root
        self.processes.append(subprocess.Popen([sys.executable, "-m", "aisix.lambda_runtime", "handler:app"],
                                               cwd=root, env=env))
        running = RunningGateway(emulator.url, None, self.store, None)  # type: ignore[arg-type]
        self.started.append(running)
        return running

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)
        for emulator in self.emulators:
            emulator.__exit__(None, None, None)


@pytest.fixture(scope="module", params=["local", "lambda"])
def front(request, moto_endpoint, upstream, tmp_path_factory) -> Iterator[Front]:
    if request.param == "lambda":
        f: Front = LambdaFront(moto_endpoint, upstream, tmp_path_factory.mktemp("lambda-front"))
    else:
        f = Front(moto_endpoint, upstream)
    yield f
    f.close()


DEAD_UPSTREAM = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here


def fault_models(upstream_base: str) -> dict[str, Any]:
    common = {"model": "gpt-4o-mini", "api_key_env": "TEST_UPSTREAM_KEY"}
    return {"models": [
        {"name": "my-gpt4-mini", "base_url": upstream_base, "timeout": 5, **common},
        {"name": "impatient", "base_url": upstream_base, "timeout": 0.5, **common},
        {"name": "dead", "base_url": DEAD_UPSTREAM, "timeout": 5, **common},
    ]}


def mock_usage(body: dict[str, Any]) -> int:
    """The usage the mock upstream reports for ``body`` (see aisix/local/mock_upstream.py)."""
    prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4 + 1
    return prompt + int(body.get("mock", {}).get("words", 12))


def words_text(count: int) -> str:
    """The text of the mock's first ``count`` words."""
    return " ".join((STORY * (1 + count // len(STORY)))[:count])


def relayed_text(events: list[str]) -> str:
    text = ""
    for data in events:
        chunk = json.loads(data) if data.startswith("{") else {}
        for choice in chunk.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
    return text


def assert_error(error: dict[str, Any], code: str | None) -> None:
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code, error


# --- upstream faults ------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamFault:
    name: str
    mock: dict[str, Any]
    stream: bool
    status: int  # the HTTP status the client sees
    code: str | None  # the error's code (HTTP body, or the stream's last event); None: no error
    charge: str  # "none" | "usage" (what the upstream reported) | "estimate" (prompt + text relayed)
    model: str = "my-gpt4-mini"
    headers: dict[str, str] = field(default_factory=dict)
    says: str | None = None  # words the error message must contain


UPSTREAM_FAULTS = [
    # A refused connection: the client must read "refused", not a class name.
    UpstreamFault("refused-stream", {}, True, 502, "upstream_error", "none", model="dead", says="connection refused"),
    UpstreamFault("refused-plain", {}, False, 502, "upstream_error", "none", model="dead", says="connection refused"),
    UpstreamFault("first-byte-timeout-stream", {"first_byte_delay": 3}, True, 504, "upstream_timeout", "estimate",
                  model="impatient"),
    UpstreamFault("first-byte-timeout-plain", {"first_byte_delay": 3}, False, 504, "upstream_timeout", "estimate",
                  model="impatient"),
    UpstreamFault("stall-mid-stream", {"stall_after": 3, "stall": 5}, True, 200, "upstream_timeout", "estimate",
                  model="impatient"),
    UpstreamFault("500-stream", {"status": 500}, True, 502, "upstream_error", "none"),
    UpstreamFault("503-stream", {"status": 503}, True, 502, "upstream_error", "none"),
    UpstreamFault("500-plain", {"status": 500}, False, 502, "upstream_error", "none"),
    UpstreamFault("429-stream", {"status": 429}, True, 429, "mock", "none", headers={"retry-after": "7"}),
    UpstreamFault("429-plain", {"status": 429}, False, 429, "mock", "none", headers={"retry-after": "7"}),
    *[
        UpstreamFault(f"malformed-{label}", {"malformed_after": 2, "malformed": bad}, True, 200, "upstream_error",
                      "estimate")
        for label, bad in [
            ("not-json", "{not json"),
            ("truncated", '{"id": "c", "choices": [{"delta": {"content": "x'),
            ("text", "Internal Server Error"),
            ("array", "[1, 2]"),
            ("string", '"just a string"'),
        ]
    ],
    UpstreamFault("error-event-mid-stream", {"error_event_after": 2, "message": "overloaded"}, True, 200,
                  "upstream_error", "estimate"),
    UpstreamFault("no-done", {"no_done": True}, True, 200, "upstream_error", "usage"),
    UpstreamFault("huge-chunk", {"huge_chunk": 1_000_000}, True, 200, None, "usage"),
    UpstreamFault("not-sse-json", {"not_sse": True}, True, 502, "upstream_error", "usage"),
    UpstreamFault("not-sse-text", {"not_sse": "text"}, True, 502, "upstream_error", "estimate"),
    UpstreamFault("not-json-plain", {"not_sse": "text"}, False, 502, "upstream_error", "estimate"),
]


@pytest.mark.parametrize("fault", UPSTREAM_FAULTS, ids=lambda f: f.name)
def test_upstream_fault(front, upstream, fault: UpstreamFault):
    """The client gets a well-formed OpenAI error, and exactly what was used is charged. Time-outs are
    the model's (0.5 s), not the upstream's: the gateway hangs up on an upstream still holding back."""
    gw = front.shared()
    secret = gw.key(tpm=100_000_000)
    body = {**CHAT, "model": fault.model, "stream": fault.stream,
            "mock": {"id": f"{fault.name}-{uuid.uuid4().hex[:6]}", **fault.mock}}
    with gw.client(secret) as client, client.stream("POST", "/v1/chat/completions", json=body) as response:
        received = []
        try:
            for piece in response.iter_bytes():
                received.append(piece)
        except httpx.RemoteProtocolError:
            # On Lambda a stream that ends on an error also carries error trailers, and a
            # function URL then cuts the response after the last event instead of ending it.
            if front.in_process:
                raise
    raw = b"".join(received).decode()
    if fault.model == "impatient":  # 3 s before the first byte, or 5 s of silence mid-stream
        record = upstream.mock.calls[body["mock"]["id"]]
        assert eventually(lambda: record.disconnected, timeout=30), "the gateway never hung up on the upstream"
        if "first_byte_delay" in fault.mock:
            assert record.first_byte is None, "the client's answer waited for the upstream's first byte"
    assert response.status_code == fault.status, raw[:500]
    for name, value in fault.headers.items():
        assert response.headers.get(name) == value
    text = ""
    if response.status_code != 200:
        assert response.headers["content-type"].startswith("application/json")
        assert_error(json.loads(raw)["error"], fault.code)
        if fault.says:
            assert fault.says in json.loads(raw)["error"]["message"]
    else:
        events = sse_events(raw)
        if fault.code is None:
            assert events[-1] == "[DONE]"
            events = events[:-1]
        else:
            assert "[DONE]" not in events, "a cut-off answer must never look complete"
            assert_error(json.loads(events[-1])["error"], fault.code)
            events = events[:-1]
        for data in events:  # everything relayed before the error is a well-formed chunk
            assert isinstance(json.loads(data), dict) and "choices" in json.loads(data)
        text = relayed_text(events)
        if fault.name == "huge-chunk":
            assert text.startswith("x" * 1_000_000) and not text.startswith("x" * 1_000_001)
    assert UPSTREAM_KEY not in raw
    expected = {"none": 0, "usage": mock_usage(body), "estimate": estimate(body, len(text))}[fault.charge]
    key_id = gw.key_id(secret)
    if expected:
        eventually(lambda: charged(gw.store, key_id) >= expected)
    assert settled(lambda: charged(gw.store, key_id), quiet=0.3) == expected


def test_an_event_over_the_size_limit_ends_the_stream_with_an_error(front, upstream, monkeypatch):
    """An upstream that sends one endless event cannot make the gateway hold it all."""
    if not front.in_process:
        pytest.skip("the limit is patched in the gateway's process")
    monkeypatch.setattr(openai_passthrough, "MAX_EVENT_BYTES", 256 * 1024)
    gw = front.shared()
    secret = gw.key(tpm=100_000_000)
    body = {**CHAT, "stream": True, "mock": {"huge_chunk": 1_000_000}}
    with gw.client(secret) as client:
        response = client.post("/v1/chat/completions", json=body)
    events = sse_events(response.text)
    assert response.status_code == 200 and "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert_error(error, "upstream_error")
    assert "larger than" in error["message"]
    assert len(response.content) < 256 * 1024
    assert eventually(lambda: charged(gw.store, gw.key_id(secret)) == estimate(body))


def test_a_failing_hook_mid_stream_still_ends_with_an_openai_error_and_a_charge(front):
    """An unexpected exception in the gateway after the first byte is an error event, not a torn stream."""
    if not front.in_process:
        pytest.skip("the hook runs in the gateway's process")
    from aisix.hooks import Hook

    class Explodes(Hook):
        def on_chunk(self, call, data):
            if '"content": "a"' in data or '"content": " a"' in data:
                raise RuntimeError("hook bug")

    gw = front.start(hooks=[Explodes()])
    secret = gw.key(tpm=100_000_000)
    body = {**CHAT, "stream": True}
    with gw.client(secret) as client:
        response = client.post("/v1/chat/completions", json=body)
    events = sse_events(response.text)
    assert response.status_code == 200 and "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert_error(error, None)
    assert error["type"] == "server_error" and "hook bug" not in response.text
    expected = estimate(body, len(relayed_text(events[:-1])))  # the chunk that failed never left
    assert eventually(lambda: charged(gw.store, gw.key_id(secret)) == expected), charged(gw.store, gw.key_id(secret))


def test_a_failing_hook_before_the_call_is_a_500_openai_error_and_the_connection_stays_usable(front):
    if not front.in_process:
        pytest.skip("the hook runs in the gateway's process")
    from aisix.hooks import Hook

    class Broken(Hook):
        async def pre_call(self, call):
            if call.body.get("marker") == "boom":
                raise RuntimeError("hook bug with internals")

    gw = front.start(hooks=[Broken()])
    with gw.client(gw.key()) as client:
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json={**CHAT, "stream": stream, "marker": "boom"})
            error = _error_of(response, 500)
            assert error["type"] == "server_error" and "internals" not in response.text
            again = client.post("/v1/chat/completions", json=CHAT)  # same keep-alive connection
            assert again.status_code == 200


# --- client faults ----------------------------------------------------------------------------


def _warm(gw: RunningGateway, probe: LoopProbe | None) -> list[str]:
    """One call through the gateway (its loop is then known), and the tasks running at rest."""
    with gw.client(gw.key()) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    if probe is None:
        return []
    previous: list[str] | None = None
    for _ in range(100):  # at rest: the same tasks twice in a row (the call's settling has ended)
        tasks = probe.tasks()
        if tasks == previous:
            break
        previous = tasks
        time.sleep(0.05)
    return tasks


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
def test_client_hanging_up_before_the_upstream_answers_cancels_the_upstream_call(front, upstream, stream):
    """The upstream sees the gateway go within a second; nothing keeps running; the prompt is charged."""
    if front.name == "lambda":
        pytest.skip("before its first byte the Lambda runtime cannot see a client leave (docs/lambda.md); the gateway's deadline bounds it")
    gw = front.shared()
    probe = front.probe(gw) if front.in_process else None
    baseline = _warm(gw, probe)
    secret = gw.key(tpm=100_000_000)
    call_id = f"early-{stream}-{uuid.uuid4().hex[:6]}"
    body = {**CHAT, "stream": stream, "mock": {"id": call_id, "first_byte_delay": 4}}
    client = RawClient(gw.url, "/v1/chat/completions", body, secret)
    record = eventually(lambda: upstream.mock.calls.get(call_id))
    assert record is not None, "the call reached the upstream"
    client.hang_up()
    assert eventually(lambda: record.disconnected, timeout=30), "the upstream call was never cancelled"
    assert record.first_byte is None, "cancelled before the upstream answered (4 s), not after"
    if probe:
        assert lingering(probe, baseline) == []
    key_id = gw.key_id(secret)
    assert eventually(lambda: charged(gw.store, key_id) == estimate(body)), charged(gw.store, key_id)
    assert settled(lambda: charged(gw.store, key_id), quiet=0.2) == estimate(body), "charged once"


def test_client_hanging_up_mid_stream_cancels_the_upstream_and_charges_what_was_relayed(front, upstream):
    gw = front.shared()
    probe = front.probe(gw) if front.in_process else None
    baseline = _warm(gw, probe)
    secret = gw.key(tpm=100_000_000)
    call_id = f"mid-{uuid.uuid4().hex[:6]}"
    body = {**CHAT, "stream": True, "mock": {"id": call_id, "words": 2000, "delay": 0.02}}  # 40 s of answer
    client = RawClient(gw.url, "/v1/chat/completions", body, secret)
    client.read_until(lambda raw: len(content_of(raw).split()) >= 8)
    read = content_of(client.received)
    client.hang_up()
    record = upstream.mock.calls[call_id]
    assert eventually(lambda: record.disconnected, timeout=30), "the upstream call was never cancelled"
    sent_words = record.events - 1  # the first event is the role chunk
    assert sent_words < 1000, "the upstream stopped long before the end of the answer"
    if probe:
        assert lingering(probe, baseline) == []
    key_id = gw.key_id(secret)
    charge = settled(lambda: charged(gw.store, key_id), quiet=0.3)
    # What was relayed lies between what this client read and what the upstream sent.
    assert estimate(body, len(read)) <= charge <= estimate(body, len(words_text(sent_words))), charge
    assert charge < mock_usage(body)


def test_a_slow_reader_stalls_the_upstream_instead_of_filling_the_gateway(front, upstream):
    """A client that stops reading holds the stream back: the gateway keeps at most a few MiB
    (socket buffers) in flight, not the 64 MiB answer; when the client reads again, it all arrives."""
    if front.name == "lambda":
        pytest.skip("the emulator's front door does not model AWS's flow control toward the function")
    gw = front.shared()
    secret = gw.key()
    call_id = f"slow-{uuid.uuid4().hex[:6]}"
    chunk, words = 256 * 1024, 256  # a 64 MiB answer
    body = {**CHAT, "stream": True, "mock": {"id": call_id, "words": words, "chunk_bytes": chunk}}
    client = RawClient(gw.url, "/v1/chat/completions", body, secret)
    client.read_until(lambda raw: b"data: " in raw)
    record = eventually(lambda: upstream.mock.calls.get(call_id))
    # The upstream stops sending once the buffers on the way are full (unheld, all 64 MiB would leave).
    held = settled(lambda: record.sent_bytes, quiet=0.5, timeout=30)
    assert held < 24 * 1024 * 1024, f"{held / 2**20:.1f} MiB left the upstream for a client reading nothing"
    raw = client.read_until(lambda raw: raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), timeout=30)
    assert len(raw) > words * chunk, "the whole answer arrived once the client read again"
    client.hang_up()


# --- bad input beyond tests/test_errors.py -----------------------------------------------------


def test_a_plain_answer_over_the_size_limit_is_a_502(front, monkeypatch):
    """A non-streamed answer is held to read its usage: one past the limit is refused, not buffered."""
    if not front.in_process:
        pytest.skip("the limit is patched in the gateway's process")
    from aisix import upstream

    monkeypatch.setattr(upstream, "MAX_ANSWER_BYTES", 4096)
    gw = front.shared()
    with gw.client(gw.key()) as client:
        small = client.post("/v1/chat/completions", json=CHAT)
        big = client.post("/v1/chat/completions", json={**CHAT, "mock": {"words": 2000}})
    assert small.status_code == 200
    error = _error_of(big, 502, "upstream_error")
    assert "larger than" in error["message"]


@pytest.fixture
def gw(front):
    if front.name == "lambda":
        pytest.skip("input limits on a function URL: AWS's own (6 MB payload, header limits) apply before the function")
    return front.shared(max_body_bytes=4096)


def _error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert_error(error, code)
    return error


def test_absurd_header_sizes_are_refused_with_an_openai_error(gw):
    secret = gw.key()
    with gw.client(secret) as client:
        big = client.post("/v1/chat/completions", json=CHAT, headers={"x-padding": "a" * 64 * 1024})
        _error_of(big, 431, "request_headers_too_large")
        many = client.post("/v1/chat/completions", json=CHAT, headers={f"x-h{i}": "b" * 100 for i in range(500)})
        _error_of(many, 431, "request_headers_too_large")
        huge_key = client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer " + "k" * 100_000})
        _error_of(huge_key, 431, "request_headers_too_large")
        assert "kkkk" not in huge_key.text
        assert client.post("/v1/chat/completions", json=CHAT, headers={"x-padding": "a" * 4096}).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"model": "my-gpt4-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "NaN"),
        (b'{"model": "my-gpt4-mini", "messages": [{"role": "user"}], "top_p": -Infinity}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"model": "my-gpt4-mini", "messages": [{"role": "user", "content": ' + b"[" * 2000 + b"]" * 2000 + b"}]}",
         "nested"),
        (b'{"model": "my-gpt4-mini", "messages": {"role": "user"}}', "messages"),
        (b'{"model": "", "messages": [{"role": "user"}]}', "model"),
        (b'{"model": "my-gpt4-mini", "messages": [{"role": 1}]}', "messages[0]"),
        (b'"just a string"', "JSON object"),
        (b"null", "JSON object"),
        (b'\xef\xbb\xbf{"model": "my-gpt4-mini"', "not valid JSON"),
    ],
    ids=["nan", "infinity", "deep-array", "deep-content", "messages-object", "empty-model", "role-not-string",
         "string", "null", "truncated"],
)
def test_more_malformed_bodies_are_400_not_500(front, body, fragment):
    gw = front.shared(max_body_bytes=1024 * 1024)
    with gw.client(gw.key()) as client:
        response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    error = _error_of(response, 400, None)
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("multipart/form-data; boundary=x", 415), ("application/json; charset=utf-8", 200),
     ("APPLICATION/JSON", 200), (None, 200)],
)
def test_content_types(gw, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    with gw.client(gw.key()) as client:
        request = client.build_request("POST", "/v1/chat/completions", content=json.dumps(CHAT).encode(),
                                       headers=headers)
        if content_type is None:
            assert "content-type" not in request.headers
        response = client.send(request)
    assert response.status_code == status, response.text
    if status != 200:
        _error_of(response, status)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "/v1/chat/completions", 405), ("DELETE", "/v1/chat/completions", 405),
     ("PATCH", "/chat/completions", 405), ("POST", "/v1/models", 405), ("POST", "/health", 405),
     ("POST", "/v1/completions", 404), ("GET", "/v1/chat/completions/../../etc/passwd", 404),
     ("POST", "/v1/audio/speech", 404)],
)
def test_more_unknown_routes_and_methods(gw, method, path, status):
    with gw.client(gw.key()) as client:
        response = client.request(method, path, json=CHAT)
    _error_of(response, status)
    if status == 405:
        assert response.headers.get("allow")


def test_body_declared_larger_than_the_limit_is_refused_before_it_is_read(gw):
    """A client announcing a huge body gets 413 at once, without sending it."""
    import socket

    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.key()}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{".encode()
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b'"request_too_large"' in answer
