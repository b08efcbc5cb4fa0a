"""The Lambda streaming runtime, end to end.

The real runtime loop runs in a subprocess (`python -m aisix.lambda_runtime`) against the
runtime API emulator on loopback; the assertions read back exactly what Lambda would
receive: request headers, raw bytes, each chunk with its arrival time, trailers. The app
is `tests/lambda_fixtures/tiny_app.py`, plain ASGI, so nothing of the gateway is involved.

No pass/fail on durations: timing claims are orderings (a chunk arrived before the app
emitted the last one), using the system-wide monotonic clock both processes share.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h11
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the runtime and the fixture app are imported from the repo root
    sys.path.insert(0, str(ROOT))

from aisix.local.function_url import function_url_event  # noqa: E402
from aisix.local.lambda_emulator import ERROR_TYPE_PATTERN, EmulatorThread, Invocation, lambda_environment  # noqa: E402

APP = "tests.lambda_fixtures.tiny_app:app"
BOOTSTRAP = ROOT / "aisix" / "lambda_runtime" / "bootstrap"
DELIMITER = b"\x00" * 8
INTERNAL_ERROR = {"error": {"message": "Internal server error", "type": "server_error", "param": None, "code": None}}


# --- harness ----------------------------------------------------------------------------


def spawn(address: str, target: str = APP, *, command: list[str] | None = None, **env: str) -> subprocess.Popen[bytes]:
    """Start a runtime process the way Lambda would, pointed at the emulator."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AISIX_", "AWS_LAMBDA_", "TINY_APP_"))}
    environment.update(lambda_environment(address))
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment.update(env)
    argv = command or [sys.executable, "-m", "aisix.lambda_runtime", target]
    return subprocess.Popen(argv, cwd=ROOT, env=environment)


class Lambda:
    """An emulator plus one warm runtime process serving it."""

    def __init__(self, emu: EmulatorThread, process: subprocess.Popen[bytes]) -> None:
        self.emu, self.process = emu, process

    def invoke(self, event: dict[str, Any], timeout: float = 15.0, **options: Any) -> Invocation:
        invocation = self.emu.invoke(event, **options)
        deadline = time.monotonic() + timeout
        while not invocation.finished.wait(0.05):
            assert self.process.poll() is None, f"runtime exited with {self.process.returncode}"
            assert time.monotonic() < deadline, "invocation not answered in time"
        return invocation

    def state(self) -> dict[str, Any]:
        return json.loads(self.invoke(url_event("/state")).payload)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(10)


def url_event(
    path: str, query: str = "", method: str = "GET", body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    target = f"{path}?{query}" if query else path
    return function_url_event(
        method,
        target,
        [("host", "abc.lambda-url.us-east-1.on.aws"), *(headers or [])],
        body,
        source_ip="203.0.113.9",
        url_id="abc",
        region="us-east-1",
        request_id="req",
    )


def http_api_event(path: str) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event, as `sam local start-api` or API Gateway send it."""
    host = "api123.execute-api.us-east-1.amazonaws.com"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": host, "x-forwarded-proto": "https", "x-forwarded-port": "443", "user-agent": "pytest"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api123",
            "domainName": host,
            "domainPrefix": "api123",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "pytest",
            },
            "requestId": "r-http",
            "routeKey": "$default",
            "stage": "$default",
            "time": "24/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795514400000,
        },
        "isBase64Encoded": False,
    }


def rest_event(path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST API (v1) proxy event: no top-level `version`."""
    host = "rest123.execute-api.us-east-1.amazonaws.com"
    headers = {"Host": host, "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", "User-Agent": "pytest"}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "GET",
            "path": f"/api{path}",
            "stage": "api",
            "identity": {"sourceIp": "203.0.113.9"},
            "domainName": host,
            "requestId": "r-rest",
            "accountId": "123456789012",
            "apiId": "rest123",
        },
        "body": None,
        "isBase64Encoded": False,
    }


def mangum_result(event: dict[str, Any]) -> dict[str, Any]:
    """What `Mangum(app)` itself returns for `event`: the oracle for buffered answers."""
    from mangum import Mangum

    from tests.lambda_fixtures import tiny_app

    class Context:
        aws_request_id = "oracle"
        invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:oracle"

        def get_remaining_time_in_millis(self) -> int:
            return 10_000

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Mangum(tiny_app.app, lifespan="off")(event, Context())  # type: ignore[arg-type]
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def strict_chunks(raw: bytes) -> tuple[list[bytes], bytes]:
    """Decode a chunked request body by the letter (CRLF everywhere); returns (chunks, trailer section)."""
    _, found, rest = raw.partition(b"\r\n\r\n")
    assert found, "no end of request head"
    chunks = []
    while True:
        size_line, crlf, rest = rest.partition(b"\r\n")
        assert crlf and re.fullmatch(rb"[0-9a-f]+", size_line), f"bad chunk size line {size_line[:40]!r}"
        size = int(size_line, 16)
        if size == 0:
            assert rest.endswith(b"\r\n"), "trailer section must end with CRLF"
            return chunks, rest
        data, terminator, rest = rest[:size], rest[size : size + 2], rest[size + 2 :]
        assert terminator == b"\r\n", "chunk data must be followed by CRLF"
        chunks.append(data)


def emitted_at(chunk: bytes) -> float:
    """The monotonic time the tiny app wrote into a `chunk <i> <t>` line."""
    return float(chunk.split()[2])


@pytest.fixture(scope="module")
def lam() -> Iterator[Lambda]:
    with EmulatorThread(function_url=True) as emu:
        process = spawn(emu.address)
        warm = Lambda(emu, process)
        try:
            yield warm
        finally:
            warm.stop()


# --- streaming --------------------------------------------------------------------------


def test_streamed_response_bytes(lam: Lambda) -> None:
    inv = lam.invoke(url_event("/stream", "n=4&gap=0.05"))

    assert inv.outcome == "response" and inv.answered == 202
    assert inv.raw.startswith(f"POST /2018-06-01/runtime/invocation/{inv.request_id}/response HTTP/1.1\r\n".encode())
    assert inv.header("Lambda-Runtime-Function-Response-Mode") == "streaming"
    assert inv.header("Transfer-Encoding") == "chunked"
    assert inv.header("Trailer") == "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
    assert inv.header("Content-Type") == "application/vnd.awslambda.http-integration-response"
    assert inv.header("Content-Length") is None

    prelude = (
        b'{"statusCode":200,"headers":{"content-type":"text/event-stream","cache-control":"no-cache"},"cookies":[]}'
    )
    assert inv.chunks[0].data == prelude + DELIMITER  # the prelude and the 8 NUL bytes, alone in the first chunk
    assert inv.body.startswith(prelude + DELIMITER)

    chunks, trailer_section = strict_chunks(inv.raw)
    assert chunks == [c.data for c in inv.chunks]
    assert trailer_section == b"\r\n" and inv.trailers == {}
    # One chunk per ASGI body message, nothing merged; the empty final message adds none.
    assert [c.split()[:2] for c in chunks[1:]] == [[b"chunk", str(i).encode()] for i in range(4)]


@contextlib.contextmanager
def chunk_gate(folder: Path, arrived: Callable[[], list[bytes]]) -> Iterator[str]:
    """Open the tiny app's ``gate`` for chunk i (a file ``folder/i``) once ``arrived()`` holds it."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for index in re.findall(rb"chunk (\d+) ", b"".join(arrived())):  # the prelude may share a piece
                (folder / index.decode()).touch()
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield "gate=" + quote(str(folder), safe="")
    finally:
        stop.set()
        thread.join(5)


def test_chunks_reach_lambda_as_the_app_produces_them(lam: Lambda, tmp_path: Path) -> None:
    """The app writes chunk i+1 only once chunk i has reached the runtime API: buffering would stall it."""
    def arrived() -> list[bytes]:
        return [c.data for inv in list(lam.emu.emulator.invocations.values()) for c in list(inv.chunks)]

    with chunk_gate(tmp_path, arrived) as gate:
        inv = lam.invoke(url_event("/stream", "n=4&" + gate))

    body = inv.chunks[1:]
    arrivals = [c.at for c in body]
    assert len(body) == 4
    assert arrivals == sorted(arrivals) and len(set(arrivals)) == 4
    for chunk in body:
        assert chunk.at >= emitted_at(chunk.data)  # sanity: the two processes share the clock
    assert not [c.data for c in body if b"early" in c.data], "a chunk was produced before the previous one arrived"


def test_error_before_any_body_is_an_http_500(lam: Lambda) -> None:
    for query in ("", "after_start=1"):  # raised before, or after http.response.start
        inv = lam.invoke(url_event("/boom-before", query))
        assert inv.outcome == "response" and inv.error is None and inv.trailers == {}
        assert inv.prelude == {"statusCode": 500, "headers": {"content-type": "application/json"}, "cookies": []}
        assert json.loads(inv.payload) == INTERNAL_ERROR


def test_error_mid_stream_ends_with_error_trailers(lam: Lambda) -> None:
    inv = lam.invoke(url_event("/boom-mid"))

    assert inv.payload == b"data: first\n\n"
    kind = inv.trailers["Lambda-Runtime-Function-Error-Type"]
    assert kind == "Runtime.StreamError" and ERROR_TYPE_PATTERN.fullmatch(kind)
    detail = json.loads(base64.b64decode(inv.trailers["Lambda-Runtime-Function-Error-Body"], validate=True))
    assert detail["errorType"] == "RuntimeError"
    assert detail["errorMessage"].startswith("exploded mid-stream") and len(detail["errorMessage"]) <= 512
    assert "Traceback" not in detail["errorMessage"]
    _, trailer_section = strict_chunks(inv.raw)
    assert len(trailer_section) < 4096
    assert trailer_section.startswith(b"Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\n")
    assert inv.error == {"type": "Runtime.StreamError", "body": detail}  # what Lambda would record


def test_cookies_and_repeated_headers_in_the_prelude(lam: Lambda) -> None:
    inv = lam.invoke(url_event("/json"))
    assert inv.prelude == {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-multi": "one,two"},
        "cookies": ["a=1; Path=/", "b=2"],
    }
    assert json.loads(inv.payload) == {"hello": "world"}


def test_request_reaches_the_app_with_lambda_context_and_deadline(lam: Lambda) -> None:
    body = bytes(range(256))
    inv = lam.invoke(
        url_event(
            "/echo", "x=1&x=2", "POST", body, [("content-type", "application/octet-stream"), ("cookie", "s=1; t=2")]
        ),
        timeout_ms=30_000,
    )
    seen = json.loads(inv.payload)

    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/echo", "x=1&x=2")
    assert bytes.fromhex(seen["body_hex"]) == body and seen["more_body"] is False
    assert seen["headers"]["cookie"] == "s=1; t=2"
    assert seen["extension"] == {"request_id": inv.request_id, "deadline_ms": inv.deadline_ms}
    assert seen["context"]["aws_request_id"] == inv.request_id
    assert 0 < seen["context"]["remaining_ms"] <= 30_000
    assert seen["context"]["invoked_function_arn"].startswith("arn:aws:lambda:")
    assert "requestContext" in seen["event_keys"]


# --- buffered events --------------------------------------------------------------------


def test_http_api_events_are_answered_buffered_like_mangum(lam: Lambda) -> None:
    event = http_api_event("/json")
    inv = lam.invoke(event)

    assert inv.outcome == "response" and inv.answered == 202
    assert inv.header("Lambda-Runtime-Function-Response-Mode") is None
    assert inv.header("Transfer-Encoding") is None and inv.header("Content-Length") == str(len(inv.body))
    assert inv.chunks == []
    assert json.loads(inv.body) == mangum_result(event)


def test_rest_api_events_are_buffered_by_default(lam: Lambda) -> None:
    event = rest_event("/json")
    inv = lam.invoke(event)

    assert inv.header("Lambda-Runtime-Function-Response-Mode") is None
    assert json.loads(inv.body) == mangum_result(event)


def test_rest_api_events_stream_when_enabled() -> None:
    with EmulatorThread() as emu:
        rest = Lambda(emu, spawn(emu.address, AISIX_STREAM_REST_API="1"))
        try:
            streamed = rest.invoke(rest_event("/stream", {"n": "3", "gap": "0.01"}))
            buffered = rest.invoke(http_api_event("/json"))
        finally:
            assert rest.stop() == 0
    assert streamed.streamed and streamed.prelude["statusCode"] == 200
    assert len(streamed.chunks) == 1 + 3  # the prelude, then one chunk per body message
    assert not buffered.streamed


# --- failures the runtime has to contain ------------------------------------------------


def test_deadline_safety_net_cancels_the_app(lam: Lambda) -> None:
    # Default margin 500 ms: with a 1 s timeout the app is cancelled about 500 ms in.
    mid_stream = lam.invoke(url_event("/slow"), timeout_ms=1000)
    assert mid_stream.payload == b"data: working\n\n"
    assert mid_stream.trailers["Lambda-Runtime-Function-Error-Type"] == "Runtime.Timeout"
    assert ERROR_TYPE_PATTERN.fullmatch(mid_stream.error["type"])  # type: ignore[index]
    detail = json.loads(base64.b64decode(mid_stream.trailers["Lambda-Runtime-Function-Error-Body"]))
    assert detail["errorType"] == "DeadlineExceeded"

    before_body = lam.invoke(url_event("/slow", "silent=1"), timeout_ms=1000)
    assert before_body.prelude["statusCode"] == 504 and before_body.trailers == {}
    assert json.loads(before_body.payload)["error"]["type"] == "server_error"

    assert lam.state()["cancelled"][-2:] == ["/slow", "/slow"]


def test_broken_runtime_connection_reaches_the_app_as_disconnect(lam: Lambda) -> None:
    before = len(lam.state()["disconnects"])
    # The emulator cuts the connection after the prelude and two body chunks.
    inv = lam.invoke(url_event("/disconnect", "n=200&gap=0.02"), break_after_chunks=3)
    assert inv.outcome == "broken" and len(inv.chunks) == 3

    disconnects = lam.state()["disconnects"]  # the same warm process, so it saw it
    assert len(disconnects) == before + 1
    seen = disconnects[-1]
    assert seen["message"] == "http.disconnect"
    assert seen["sent"] < seen["of"]  # it stopped early instead of streaming into the void


def test_warm_process_keeps_no_state_between_invocations(lam: Lambda) -> None:
    first = lam.state()
    lam.invoke(url_event("/stream", "n=2&gap=0"))
    lam.invoke(url_event("/boom-mid"))
    lam.invoke(url_event("/boom-before"))
    lam.invoke(http_api_event("/json"))
    lam.invoke(url_event("/disconnect", "n=50&gap=0.01"), break_after_chunks=2)
    lam.invoke(url_event("/slow"), timeout_ms=700)
    second = lam.state()

    assert second["pid"] == first["pid"]
    assert second["startups"] == 1  # lifespan startup ran once for the process
    assert second["invocations"] == first["invocations"] + 7
    assert second["tasks"] == first["tasks"]  # no task left behind by any of them


# --- the function URL front door ------------------------------------------------------


def test_front_door_streams_to_an_http_client(lam: Lambda, tmp_path: Path) -> None:
    """The app writes chunk i+1 only once the HTTP client has chunk i."""
    received: list[bytes] = []
    with chunk_gate(tmp_path, lambda: list(received)) as gate, httpx.Client(timeout=30) as client, \
            client.stream("GET", f"{lam.emu.url}/stream?n=4&{gate}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for piece in response.iter_raw():
            received.append(piece)

    lines = b"".join(received).splitlines()
    assert [line.split()[:2] for line in lines] == [[b"chunk", str(i).encode()] for i in range(4)]
    assert not [line for line in lines if line.endswith(b"early")], "the client's chunk came only after the next"


def test_front_door_headers_cookies_and_broken_streams(lam: Lambda) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{lam.emu.url}/json")
        assert response.status_code == 201
        assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
        assert response.headers["x-multi"] == "one,two"
        assert response.json() == {"hello": "world"}

        posted = client.post(
            f"{lam.emu.url}/echo?q=1", content=b"\x00\xffbinary", headers={"content-type": "application/octet-stream"}
        )
        assert bytes.fromhex(posted.json()["body_hex"]) == b"\x00\xffbinary"

        with pytest.raises(httpx.RemoteProtocolError):  # an errored stream arrives truncated
            client.get(f"{lam.emu.url}/boom-mid")


def test_client_leaving_does_not_reach_the_app_like_on_aws(lam: Lambda) -> None:
    before = len(lam.state()["disconnects"])
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", f"{lam.emu.url}/disconnect?n=20&gap=0.01") as response,
    ):
        next(response.iter_raw())  # read the first event, then hang up

    assert len(lam.state()["disconnects"]) == before  # the app streamed all 20 events into the void
    last = list(lam.emu.emulator.invocations.values())[-2]
    assert last.outcome == "response" and last.payload.count(b"data: ") == 20


def test_front_door_can_propagate_a_client_disconnect() -> None:
    with EmulatorThread(function_url=True, propagate_disconnect=True) as emu:
        lam = Lambda(emu, spawn(emu.address))
        try:
            with (
                httpx.Client(timeout=10) as client,
                client.stream("GET", f"{emu.url}/disconnect?n=500&gap=0.02") as response,
            ):
                next(response.iter_raw())
            seen = lam.state()["disconnects"]
        finally:
            assert lam.stop() == 0
    assert seen[-1]["message"] == "http.disconnect" and seen[-1]["sent"] < seen[-1]["of"]


def test_function_url_event_shape_for_auth_none() -> None:
    event = function_url_event(
        "GET",
        "/v1/models",
        [("Host", "x"), ("Accept", "a"), ("Accept", "b")],
        b"",
        source_ip="198.51.100.7",
        url_id="u1",
        region="eu-west-1",
        request_id="r",
    )
    assert event["requestContext"]["accountId"] == "anonymous"
    assert "authorizer" not in event["requestContext"]
    assert event["requestContext"]["domainName"] == "u1.lambda-url.eu-west-1.on.aws"
    assert not {"cookies", "queryStringParameters", "body"} & event.keys()
    assert event["headers"] == {"host": "x", "accept": "a,b"} and event["isBase64Encoded"] is False

    posted = function_url_event(
        "POST",
        "/x?a=1&a=2&b=",
        [("Content-Type", "application/json"), ("Cookie", "c=1; d=2")],
        b'{"k": 1}',
        source_ip="1.2.3.4",
        url_id="u1",
        region="eu-west-1",
        request_id="r",
    )
    assert posted["body"] == '{"k": 1}' and posted["isBase64Encoded"] is False
    assert posted["queryStringParameters"] == {"a": "1,2", "b": ""} and posted["rawQueryString"] == "a=1&a=2&b="
    assert posted["cookies"] == ["c=1", "d=2"] and "cookie" not in posted["headers"]


# --- the emulator answers like Lambda ---------------------------------------------------


def test_emulator_validates_like_the_runtime_api() -> None:
    with EmulatorThread() as emu:
        host, port = emu.address.rsplit(":", 1)

        def call(
            method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> tuple[int, Any, dict[str, str]]:
            conn = HTTPConnection(host, int(port), timeout=5)
            conn.request(method, f"/2018-06-01/runtime{path}", body=body, headers=headers or {})
            response = conn.getresponse()
            data = json.loads(response.read() or b"null")
            conn.close()
            return response.status, data, dict(response.getheaders())

        first = emu.invoke({"n": 1})
        status, event, headers = call("GET", "/invocation/next")
        assert status == 200 and event == {"n": 1}
        assert headers["Lambda-Runtime-Aws-Request-Id"] == first.request_id
        assert int(headers["Lambda-Runtime-Deadline-Ms"]) == first.deadline_ms

        status, data, _ = call(
            "POST",
            f"/invocation/{first.request_id}/response",
            b"{}",
            {"Lambda-Runtime-Function-Response-Mode": "buffered"},
        )
        assert (status, data["errorType"]) == (400, "InvalidFunctionResponseMode")
        status, data, _ = call("POST", "/invocation/no-such-id/response", b"{}")
        assert (status, data["errorType"]) == (400, "InvalidRequestID")

        second = emu.invoke({"n": 2})
        call("GET", "/invocation/next")
        assert call("POST", f"/invocation/{second.request_id}/response", b'"ok"')[0] == 202
        status, data, _ = call("POST", f"/invocation/{second.request_id}/response", b'"again"')
        assert (status, data["errorType"]) == (403, "InvalidStateTransition")
        assert second.wait().body == b'"ok"'

        third = emu.invoke({"n": 3})
        call("GET", "/invocation/next")
        call(
            "POST",
            f"/invocation/{third.request_id}/error",
            b'{"errorMessage": "x"}',
            {"Lambda-Runtime-Function-Error-Type": "not-a-valid-type"},
        )
        assert third.wait().error == {"type": "Runtime.Unknown", "body": {"errorMessage": "x"}}


# --- process lifecycle ------------------------------------------------------------------


def test_app_without_lifespan_support_is_served() -> None:
    with EmulatorThread() as emu:
        plain = Lambda(emu, spawn(emu.address, "tests.lambda_fixtures.tiny_app:no_lifespan_app"))
        try:
            inv = plain.invoke(url_event("/anything"))
        finally:
            assert plain.stop() == 0
    assert json.loads(inv.payload) == {"lifespan": False}


@pytest.mark.parametrize(
    ("target", "env", "kind"),
    [
        ("tests.lambda_fixtures.no_such_module:app", {}, "Runtime.ImportModuleError"),
        ("tests.lambda_fixtures.tiny_app:missing", {}, "Runtime.HandlerNotFound"),
        (APP, {"TINY_APP_FAIL_STARTUP": "1"}, "Runtime.StartupFailed"),
    ],
)
def test_init_failures_are_reported_to_init_error(target: str, env: dict[str, str], kind: str) -> None:
    with EmulatorThread() as emu:
        process = spawn(emu.address, target, **env)
        assert process.wait(15) == 1
        assert [e["type"] for e in emu.call(lambda: list(emu.emulator.init_errors))] == [kind]
        assert emu.emulator.init_errors[0]["body"]["errorMessage"]


def test_wrapper_script_snapstart_restore_and_sigterm_shutdown(tmp_path: Path) -> None:
    """Started the way Lambda starts it: AWS_LAMBDA_EXEC_WRAPPER <python> <stock runtime args>."""
    marker = tmp_path / "shutdown.json"
    assert os.access(BOOTSTRAP, os.X_OK), "the wrapper must be executable"
    with EmulatorThread() as emu:
        process = spawn(
            emu.address,
            command=[str(BOOTSTRAP), sys.executable, "/var/runtime/bootstrap.py"],
            LAMBDA_TASK_ROOT=str(ROOT),
            AISIX_ASGI_APP=APP,
            AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
            TINY_APP_SHUTDOWN_FILE=str(marker),
        )
        wrapped = Lambda(emu, process)
        inv = wrapped.invoke(url_event("/json"))
        assert inv.prelude["statusCode"] == 201
        assert emu.emulator.restores == 1  # it called /restore/next before its first /next

        process.send_signal(signal.SIGTERM)  # `exec` in the wrapper: the signal reaches Python
        assert process.wait(10) == 0
    assert json.loads(marker.read_text()) == {"invocations": 1}


# --- the function URL holds a bounded amount per stream ---------------------------------


def test_a_slow_reader_stalls_the_runtime_and_the_front_door_holds_little() -> None:
    """32 MiB streamed to a client that stops reading: the emulator fills a small pipe, stops
    reading the runtime (so its writes stall), and holds a few MiB at most; then every byte arrives."""
    from aisix.local.lambda_invocation import PIPE_LIMIT
    from tests.lambda_fixtures.tiny_app import BIG_CHUNK, big_chunk

    mib = 32
    expected = hashlib.sha256()
    for i in range(mib * 1024 * 1024 // BIG_CHUNK):
        expected.update(big_chunk(i))
    with EmulatorThread(function_url=True) as emu:
        lam = Lambda(emu, spawn(emu.address))
        try:
            host, port = emu.url.removeprefix("http://").rsplit(":", 1)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # a small window: it fills fast
            sock.connect((host, int(port)))
            sock.settimeout(30)
            client = h11.Connection(h11.CLIENT)
            sock.sendall(client.send(h11.Request(method="GET", target=f"/big?mib={mib}", headers=[("host", host)])))
            sock.sendall(client.send(h11.EndOfMessage()))

            def relayed() -> Invocation | None:
                found = [i for i in emu.emulator.invocations.values() if i.pipe is not None]
                return found[-1] if found else None

            # The client reads nothing: the pipe fills and the emulator stops reading the runtime,
            # far from the end of the stream (what is in flight sits in socket buffers).
            inv = until(lambda: emu.call(lambda: (i := relayed()) is not None and i.pipe.blocked and i))
            stalled_at = emu.call(lambda: inv.bytes_received)
            assert inv.outcome is None and stalled_at < mib * 1024 * 1024 // 2, stalled_at

            received, status = hashlib.sha256(), None
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    received.update(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            sock.close()
            inv.wait()
        finally:
            assert lam.stop() == 0
    assert status == 200
    assert received.hexdigest() == expected.hexdigest(), "every byte arrived, in order"
    assert inv.outcome == "response" and inv.bytes_received > mib * 1024 * 1024
    assert inv.chunk_count == 1 + mib * 1024 * 1024 // BIG_CHUNK  # counted even when not kept
    assert not inv.complete and sum(len(c.data) for c in inv.chunks) <= 1024 * 1024  # the record is capped
    assert inv.peak_held < 4 * 1024 * 1024, f"the emulator held {inv.peak_held / 2**20:.1f} MiB of one stream"
    assert inv.pipe is not None and inv.pipe.peak <= PIPE_LIMIT + BIG_CHUNK


# --- the Extensions API -------------------------------------------------------------------

EXT = "/2020-01-01/extension"


def api_call(
    address: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """One request with a plain HTTP client: (status, JSON body, headers)."""
    host, port = address.rsplit(":", 1)
    conn = HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers or {})
    response = conn.getresponse()
    data = json.loads(response.read() or b"null")
    conn.close()
    return response.status, data, dict(response.getheaders())


def register(address: str, name: str, events: list[str]) -> tuple[int, Any, dict[str, str]]:
    return api_call(address, "POST", f"{EXT}/register", {"events": events}, {"Lambda-Extension-Name": name})


class Background(threading.Thread):
    """A blocking call on its own thread (daemon: a call that never returns ends with the emulator)."""

    def __init__(self, fn: Any) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def value(self, timeout: float = 15.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the call did not return"
        if self.error is not None:
            raise self.error
        return self.result


def until(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "state not reached in time"
        time.sleep(0.01)
    return result


def test_extension_registration_answers_like_lambda() -> None:
    with EmulatorThread() as emu:
        status, body, headers = register(emu.address, "aisix-flush", [])
        assert status == 200
        assert str(uuid.UUID(headers["Lambda-Extension-Identifier"])) == headers["Lambda-Extension-Identifier"]
        assert body == {"functionName": "aisix-local", "functionVersion": "$LATEST", "handler": "handler.handler"}
        assert register(emu.address, "watcher", ["INVOKE"])[0] == 200  # internal: INVOKE is allowed

        refusals = {
            "shutdown for an internal extension": register(emu.address, "greedy", ["SHUTDOWN"]),
            "unknown event": register(emu.address, "odd", ["RESTORE"]),
            "no name": register(emu.address, "", []),
            "same name twice": register(emu.address, "aisix-flush", []),
        }
        assert {what: (s, b["errorType"]) for what, (s, b, _) in refusals.items()} == {
            "shutdown for an internal extension": (403, "Extension.InvalidEventType"),
            "unknown event": (403, "Extension.InvalidEventType"),
            "no name": (403, "Extension.InvalidExtensionName"),
            "same name twice": (403, "Extension.InvalidExtensionState"),
        }
        assert all(b["errorMessage"] for _, b, _ in refusals.values())

        registered = emu.call(lambda: emu.emulator.registered_extensions)
        assert [(e.name, e.events, e.internal) for e in registered] == [
            ("aisix-flush", (), True),
            ("watcher", ("INVOKE",), True),
        ]
        for headers_sent, error in (
            ({}, "Extension.MissingExtensionIdentifier"),
            ({"Lambda-Extension-Identifier": "not-a-uuid"}, "Extension.InvalidExtensionIdentifier"),
            ({"Lambda-Extension-Identifier": str(uuid.uuid4())}, "Extension.UnknownExtensionIdentifier"),
        ):
            status, body, _ = api_call(emu.address, "GET", f"{EXT}/event/next", headers=headers_sent)
            assert (status, body["errorType"]) == (403, error)


def test_init_waits_for_extensions_and_registration_closes_when_the_runtime_is_ready() -> None:
    with EmulatorThread() as emu:
        flush = register(emu.address, "aisix-flush", [])[2]["Lambda-Extension-Identifier"]
        watcher = register(emu.address, "watcher", ["INVOKE"])[2]["Lambda-Extension-Identifier"]
        invocation = emu.invoke({"n": 1})
        runtime_next = Background(lambda: api_call(emu.address, "GET", "/2018-06-01/runtime/invocation/next"))

        until(lambda: emu.call(lambda: not emu.emulator.extensions.registration_open))
        status, body, _ = register(emu.address, "late", [])
        assert (status, body["errorType"]) == (403, "Extension.RegistrationClosed")
        # Init is not over until every registered extension has called /event/next. (A bounded
        # wait for something that must not happen: it cannot flake when the emulator is right.)
        runtime_next.join(0.5)
        assert runtime_next.is_alive() and not invocation.dispatched

        def next_event(identifier: str) -> Any:
            headers = {"Lambda-Extension-Identifier": identifier}
            return api_call(emu.address, "GET", f"{EXT}/event/next", headers=headers)

        Background(lambda: next_event(flush))  # no events: it waits until the environment is gone
        watched = Background(lambda: next_event(watcher))
        status, event, headers = runtime_next.value()
        assert (status, event) == (200, {"n": 1})
        status, seen, seen_headers = watched.value()
        assert status == 200 and seen_headers["Lambda-Extension-Identifier"] == watcher
        assert seen["eventType"] == "INVOKE" and seen["requestId"] == invocation.request_id
        assert seen["deadlineMs"] == invocation.deadline_ms
        flushed = next(e for e in emu.call(lambda: emu.emulator.registered_extensions) if e.name == "aisix-flush")
        assert flushed.ready and flushed.received == []


def test_shutdown_event_goes_to_external_extensions_subscribed_to_it() -> None:
    with EmulatorThread(external_extensions=frozenset({"telemetry"})) as emu:
        status, _, headers = register(emu.address, "telemetry", ["INVOKE", "SHUTDOWN"])
        assert status == 200
        identifier = headers["Lambda-Extension-Identifier"]
        headers = {"Lambda-Extension-Identifier": identifier}
        waiting = Background(lambda: api_call(emu.address, "GET", f"{EXT}/event/next", headers=headers))
        until(lambda: emu.call(lambda: emu.emulator.registered_extensions[0].ready))
        deadline_ms = int(time.time() * 1000) + 2000
        emu.call(lambda: emu.emulator.spin_down(deadline_ms))
        status, event, _ = waiting.value()
    assert status == 200
    assert event == {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline_ms}


@pytest.mark.parametrize(
    ("extension", "on_sigterm", "exits", "code", "marker"),
    [
        ("register", "exit", True, 0, "SIGTERM"),  # SIGTERM, and it cleans up within the grace
        ("register", "ignore", False, -signal.SIGKILL, None),  # SIGTERM, grace, then SIGKILL
        ("none", "exit", False, -signal.SIGKILL, None),  # no extension: SIGKILL, no SIGTERM at all
    ],
)
def test_spin_down_signals_like_lambda(
    tmp_path: Path, extension: str, on_sigterm: str, exits: bool, code: int, marker: str | None
) -> None:
    marker_file = tmp_path / "marker"
    with EmulatorThread() as emu:
        process = spawn(
            emu.address, command=[sys.executable, "-m", "tests.lambda_fixtures.extension_client",
                                  extension, on_sigterm, str(marker_file)]
        )
        try:

            def ready() -> bool:
                extensions = emu.emulator.registered_extensions
                runtime_waiting = not emu.emulator.extensions.registration_open
                return runtime_waiting and (extension == "none" or bool(extensions and extensions[0].ready))

            until(lambda: emu.call(ready))
            assert emu.shutdown(process, grace=0.5) is exits
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
    assert process.returncode == code
    assert (marker_file.read_text() if marker_file.exists() else None) == marker


def test_the_runtime_and_its_emulation_do_not_import_each_other() -> None:
    """Dev tooling stays out of what Lambda ships, and the oracle spells the protocol itself."""

    def loaded(module: str) -> set[str]:
        code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('aisix.')))"
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        return set(run.stdout.split())

    runtime = loaded("aisix.lambda_runtime.__main__")
    assert "aisix.lambda_runtime.loop" in runtime and not {m for m in runtime if m.startswith("aisix.local")}
    emulation = loaded("aisix.local.lambda_emulator")
    assert "aisix.local.function_url" in emulation
    assert not {m for m in emulation if m.startswith("aisix.lambda_runtime")}
    assert not list((ROOT / "aisix" / "lambda_runtime").glob("*emulator*.py"))


def test_runtime_api_calls_reuse_one_connection_and_survive_a_stale_one() -> None:
    """Calls to the runtime API reuse one kept-alive connection (a new one per call cost ~100 µs of CPU
    a side); a kept connection the server has closed since (idle time-out, a SnapStart restore) is not
    an error: the call is made again on a fresh connection, once."""
    from aisix.lambda_runtime.runtime_api import RuntimeAPI

    async def run() -> tuple[list[int], list[int]]:
        requests_per_connection: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served = 0
            requests_per_connection.append(0)
            index = len(requests_per_connection) - 1
            while True:
                head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
                if not head:
                    break
                served += 1
                requests_per_connection[index] = served
                body = json.dumps({"n": sum(requests_per_connection)}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r\r\n"
                             b"Lambda-Runtime-Deadline-Ms: 9999999999999\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if served == 3:  # the server drops the connection while the client keeps it idle
                    break
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        api = RuntimeAPI(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        events = [json.loads((await api.next_invocation()).event)["n"] for _ in range(5)]
        server.close()
        return requests_per_connection, events

    per_connection, events = asyncio.run(run())
    assert events == [1, 2, 3, 4, 5]  # every call answered, the one after the drop included
    assert per_connection == [3, 2]  # three calls on the first connection, then a fresh one
