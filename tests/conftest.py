"""Shared test fixtures: real servers on loopback.

* moto's DynamoDB server (real DynamoDB API calls over HTTP), one per session
  (per xdist worker), with fresh tables per test; and a second one that serves one
  request at a time, for the tests of exactness across instances (`atomic_moto_endpoint`);
* the mock OpenAI-compatible upstream, served by uvicorn;
* gateways served by uvicorn, each a real HTTP server the tests call with
  httpx or the ``openai`` client (`start_gateway`, the one factory);
* `FakeClock`: time that moves only when a test says so, for key-cache lifetimes and
  rate-limit windows (no test waits for a minute to turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SECURITY_TOKEN="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)

import logging  # noqa: E402

import botocore.session  # noqa: E402
import httpx  # noqa: E402
import httpx2  # noqa: E402
import pytest  # noqa: E402
import uvicorn  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

from aisix.app import create_app  # noqa: E402
from aisix.auth import issue_key  # noqa: E402
from aisix.config import Settings, parse_config  # noqa: E402
from aisix.gateway import Gateway  # noqa: E402
from aisix.hooks import Hook, RateLimitHook  # noqa: E402
from aisix.local.mock_upstream import MockUpstream, serve_lifespan  # noqa: E402
from aisix.quota import Quota  # noqa: E402
from aisix.store import AsyncStore, Store, Usage, make_client, window_start  # noqa: E402
from aisix.local.ports import free_port  # noqa: F401  (tests import it from here)

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server access lines

# One botocore session per test process: a new session loads DynamoDB's service model again,
# ~0.4 s of CPU for every client the tests and their gateways build (hundreds of them); from a
# shared session a client costs ~10 ms. Clients made from it keep their own configuration.
_BOTOCORE_SESSION = botocore.session.get_session()
botocore.session.get_session = lambda env_vars=None: _BOTOCORE_SESSION


def _share_ssl_contexts(package: Any) -> None:
    """Make ``package.create_ssl_context`` (httpx's, or httpx2's) hand out one context per settings.

    Loading the CA bundle costs ~55 ms of CPU, and every client builds a context: each gateway
    two (its aiohttp transport), each ``httpx.Client`` or ``httpx.post`` one. The suite makes
    thousands and never speaks TLS (every server is on loopback, plain HTTP), so one shared
    context per (verify, environment) is the same to every test and saves minutes of CPU.
    A client certificate or a custom ``verify`` still gets its own."""
    real = package._config.create_ssl_context
    shared: dict[tuple[Any, ...], Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if cert is not None or not isinstance(verify, bool):
            return real(verify=verify, cert=cert, trust_env=trust_env)
        key = (verify, trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in shared:
            shared[key] = real(verify=verify, trust_env=trust_env)
        return shared[key]

    package.create_ssl_context = package._config.create_ssl_context = create_ssl_context
    package._transports.default.create_ssl_context = create_ssl_context


_share_ssl_contexts(httpx)
_share_ssl_contexts(httpx2)


# The files that take longest, run first. pytest-xdist (`--dist loadfile`) hands each worker a whole
# file at a time, in collection order (`--no-loadscope-reorder`: its own order, by number of tests,
# started the one-test bench smoke last, and the run waited for it alone). Other files follow.
SLOW_FILES_FIRST = [
    "test_bench_smoke.py", "test_local_run.py", "test_lambda_gateway.py", "test_faults.py", "test_fuzz.py",
    "test_matrix.py", "test_package.py", "test_relay.py", "test_state_faults.py", "test_sdks.py", "test_keys.py",
]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Leave what collection imported (SDKs, moto, botocore's models: most of the heap) out of
    every later garbage collection, which walked it all again (test_matrix: GC 3.0 s -> 2.3 s)."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept



class PromptServer(uvicorn.Server):
    """uvicorn's server, stopped as soon as it is told to.

    uvicorn looks at ``should_exit`` every 0.1 s, then sleeps 0.1 s before it waits (in 0.1 s
    steps) for connections to close: ~0.2 s per stop, and the suite stops hundreds of servers.
    Here `stop` wakes the main loop, and the shutdown polls every 5 ms; what it waits for (open
    connections, running tasks, for at most ``timeout_graceful_shutdown``; then the lifespan's
    shutdown) is uvicorn's own (uvicorn 0.54's `Server.shutdown`)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # on_tick refreshes the Date header when its counter is a multiple of 10: once per wake.
        while not await self.on_tick(0):
            try:
                await asyncio.wait_for(self._wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def wake(self) -> None:
        """Called from another thread once ``should_exit`` is set."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed meanwhile: the server has already stopped
                pass

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0)
        while (state.connections or state.tasks) and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.005)
        if not self.force_exit:
            for task in list(state.tasks):  # still running after the graceful time-out
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            await self.lifespan.shutdown()


class ServerThread:
    """An ASGI app served by uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A stop waits at most 2 s for calls still running (a mock upstream may be in a 20 s delay).
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = PromptServer(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def request_stop(self) -> None:
        """Tell the server to stop, without waiting (`stop` waits): several stop together."""
        self.server.should_exit = True
        self.server.wake()

    def stop(self, grace: float | None = None) -> None:
        """Stop, waiting at most ``grace`` seconds (default 2) for calls still running."""
        if grace is not None:
            self.server.config.timeout_graceful_shutdown = grace
        self.request_stop()
        self.thread.join(10)


@contextlib.contextmanager
def serve_moto(threaded: bool) -> Iterator[str]:
    """moto's DynamoDB as `moto.server.ThreadedMotoServer` serves it (werkzeug, moto's request
    handler), on a port of its own; stopped within 50 ms (werkzeug polls for shutdown every 0.5 s)."""
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=threaded, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with serve_moto(threaded=True) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def atomic_moto_endpoint() -> Iterator[str]:
    """moto's DynamoDB served one request at a time: conditional writes are atomic, as DynamoDB's are.

    moto's threaded server is not: two concurrent conditional UpdateItems on one item can both
    pass their condition and return the same counter (docs in /work/shared/notes/testing.md:
    51-58 admitted of 50 in a third of runs). werkzeug's non-threaded server handles each
    request to the end before accepting the next (HTTP/1.0, one connection at a time), so
    every UpdateItem reads and writes the item alone. It shares moto's in-process backend
    with `moto_endpoint`: tables created through either are seen by both.
    """
    with serve_moto(threaded=False) as endpoint:
        yield endpoint


class FakeClock:
    """A clock for `KeyCache` and `Quota` that only moves when told to.

    It starts a few seconds into a calendar minute an hour ahead of real time, so a
    test owns its rate-limit windows (no minute turns mid-test) and never shares a
    counter item with a test on real time.
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else window_start(time.time()) + 3600 + 5.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def next_window(self) -> None:
        """Move to 5 s into the next calendar minute."""
        self.now = window_start(self.now) + 60 + 5.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class Upstream:
    url: str
    mock: MockUpstream

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def requests(self) -> list[dict[str, Any]]:
        return list(self.mock.requests)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    mock = MockUpstream(delay=0.0, words=12)
    server = ServerThread(mock).start()
    yield Upstream(server.url, mock)
    server.stop(grace=0)  # the session is over: calls some test left behind (a 5 s delay) are cancelled


@functools.cache
def shared_client(endpoint: str) -> Any:
    """One botocore DynamoDB client per endpoint in the test process: building one costs ~30 ms of
    CPU and each test built two (its tables', its gateway's). A client is thread-safe and keeps no
    state a test could see; a test that needs other settings passes its own."""
    return make_client(endpoint, "us-east-1")


@pytest.fixture
def store(moto_endpoint: str) -> Store:
    suffix = uuid.uuid4().hex[:8]
    s = Store(shared_client(moto_endpoint), f"keys-{suffix}", f"counters-{suffix}")
    s.create_tables()
    return s


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    store: Store
    server: ServerThread
    clock: Callable[[], float] = time.time  # the gateway's wall clock for rate-limit windows

    @property
    def quota(self) -> Quota:
        """The rate-limit quota of the running gateway (its `RateLimitHook`'s)."""
        return next(h.quota for h in self.gateway.pipeline.hooks if isinstance(h, RateLimitHook))

    def use_clock(self, clock: FakeClock) -> None:
        """Run the key cache and the rate-limit windows of this gateway on ``clock``."""
        self.gateway.keys.clock = clock
        self.quota.clock = clock
        self.clock = clock

    def window(self, secret: str) -> Usage:
        """The counters of ``secret``'s current window, as the gateway's clock sees it."""
        return self.store.read_window(self.key_id(secret), self.clock())

    def key(
        self,
        name: str = "test",
        models: set[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> str:
        secret, _ = issue_key(self.store, name, frozenset(models) if models is not None else None, rpm, tpm)
        return secret

    def client(self, secret: str, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30)  # a hang guard
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {secret}"}, **kwargs)

    def key_id(self, secret: str) -> str:
        from aisix.auth import hash_key, key_id_for

        return key_id_for(hash_key(secret))


def models_config(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "models": [
            {"name": "my-gpt4-mini", "model": "gpt-4o-mini", "base_url": base_url, "api_key_env": "TEST_UPSTREAM_KEY",
             "timeout": 5, "created": 1700000000, "owned_by": "openai"},
            {"name": "other-model", "model": "other-upstream", "base_url": base_url, "timeout": 5},
        ],
        **extra,
    }


@pytest.fixture
def start_gateway(
    store: Store, upstream: Upstream, moto_endpoint: str
) -> Iterator[Callable[..., RunningGateway]]:
    """Start a gateway (or several sharing one table); all are stopped after the test."""
    started: list[RunningGateway] = []

    def start(
        config: dict[str, Any] | None = None,
        hooks: list[Hook] | None = None,
        environ: dict[str, str] | None = None,
        clock: FakeClock | None = None,
        endpoint: str | None = None,
        dynamodb_client: Any = None,
        **settings: Any,
    ) -> RunningGateway:
        """``clock``: run key cache and windows on it; ``endpoint``: another DynamoDB for the
        gateway (same tables); ``dynamodb_client``: the gateway's own botocore client."""
        env = {"TEST_UPSTREAM_KEY": "sk-upstream-secret-do-not-leak", **(environ or {})}
        cfg = parse_config(config or models_config(upstream.base_url), env)
        # Token charges coalesced for 50 ms (the production default is 1 s): the flusher runs,
        # and tests waiting for a charge wait little.
        base = {"keepalive_seconds": 5.0, "key_cache_seconds": 0.5, "token_flush_seconds": 0.05}
        base.update(settings)
        endpoint = endpoint or moto_endpoint
        s = Settings(
            keys_table=store.keys_table,
            counters_table=store.counters_table,
            dynamodb_endpoint=endpoint,
            **base,
        )
        client = dynamodb_client or shared_client(endpoint)
        async_store = AsyncStore(Store(client, store.keys_table, store.counters_table))
        gateway = Gateway(s, cfg, async_store, hooks=hooks)
        server = ServerThread(create_app(gateway)).start()
        running = RunningGateway(server.url, gateway, store, server)
        if clock is not None:
            running.use_clock(clock)
        started.append(running)
        return running

    yield start
    for running in started:  # all told at once: each gives back its leases and closes its pools
        running.server.request_stop()
    for running in started:
        running.server.stop()


def same_minute(attempt: Callable[[], Any], tries: int = 3) -> Any:
    """Run ``attempt`` until it ran within one calendar minute; its result.

    For a gateway in another process, whose rate-limit windows follow the real clock: a
    test that counts within one window is re-run (with fresh keys) if a minute turned
    during it, instead of sleeping until a minute starts.
    """
    for _ in range(tries):
        before = window_start(time.time())
        result = attempt()
        if window_start(time.time()) == before:
            return result
    raise AssertionError(f"a minute turned during each of {tries} attempts")


def window_total(store: Store, key_id: str) -> Usage:
    """A key's counters in this window and the previous one: for a gateway on the real clock,
    a test may straddle a minute (tests are far shorter than one)."""
    now = time.time()
    a, b = store.read_window(key_id, now), store.read_window(key_id, now - 60)
    return Usage(a.requests + b.requests, a.tokens + b.tokens, a.window_start)


class GatedUpstream:
    """An OpenAI-compatible streaming upstream that sends event ``i + 1`` only once ``arrived(i)``
    says event ``i`` has reached the far side of the gateway (polled, for at most ``wait`` s).

    So "each chunk is relayed as the upstream produces it" is a fact about the order of events,
    not about time: a gateway that held events back would leave ``arrived`` false, and the
    upstream notes in ``early`` each event it had to send without the previous one through.
    Event ``i`` carries the content ``f"w{i} "``.
    """

    def __init__(self, words: int, wait: float = 10.0) -> None:
        self.words = words
        self.wait = wait
        self.arrived: Callable[[int], bool] = lambda i: True
        self.early: list[int] = []
        self.server: ServerThread | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.url + "/v1"

    @staticmethod
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {"id": "chatcmpl-gated", "object": "chat.completion.chunk", "created": 1700000000, "model": "gated",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        loop = asyncio.get_running_loop()
        for i in range(self.words):
            if i:
                deadline = loop.time() + self.wait
                while not self.arrived(i - 1):
                    if loop.time() > deadline:
                        self.early.append(i)
                        break
                    await asyncio.sleep(0.005)
            await send({"type": "http.response.body", "body": self.chunk({"content": f"w{i} "}), "more_body": True})
        await send({"type": "http.response.body", "body": self.chunk({}, "stop"), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.fixture
def gated_upstream() -> Iterator[Callable[[int], GatedUpstream]]:
    """Start a `GatedUpstream` of ``words`` events (stopped after the test)."""
    started: list[GatedUpstream] = []

    def start(words: int) -> GatedUpstream:
        gated = GatedUpstream(words)
        gated.server = ServerThread(gated).start()
        started.append(gated)
        return gated

    yield start
    for gated in started:
        assert gated.server is not None
        gated.server.stop()


def sse_events(raw: str) -> list[str]:
    """The ``data`` payloads of an SSE body, in order (multi-line data joined with LF)."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        lines = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            events.append("\n".join(lines))
    return events


def chunked_frames(raw: bytes) -> tuple[bytes, list[bytes]]:
    """The head of a raw HTTP/1.1 response and the payloads of its chunked-transfer frames, in
    order (the terminating empty chunk left out): one frame per write of the server's app."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    frames = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        frames.append(rest[:size])
        assert rest[size:size + 2] == b"\r\n", "a chunk is followed by CRLF"
        rest = rest[size + 2:]
    return head, frames


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until ``check()`` is truthy: post-call work finishes just after the response."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


CHAT = {"model": "my-gpt4-mini", "messages": [{"role": "user", "content": "Tell me a story"}]}
