"""Shared test fixtures: real servers on loopback.

* moto's DynamoDB server (real DynamoDB API calls over HTTP), one per session,
  with fresh tables per test;
* the mock OpenAI-compatible upstream, served by uvicorn;
* gateways served by uvicorn, each a real HTTP server the tests call with
  httpx or the ``openai`` client.
"""

from __future__ import annotations

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

import httpx  # noqa: E402
import pytest  # noqa: E402
import uvicorn  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from aisix.app import create_app  # noqa: E402
from aisix.auth import issue_key  # noqa: E402
from aisix.config import Settings, parse_config  # noqa: E402
from aisix.gateway import Gateway  # noqa: E402
from aisix.hooks import Hook  # noqa: E402
from aisix.local.mock_upstream import MockUpstream  # noqa: E402
from aisix.store import AsyncStore, Store, make_client  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server access lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


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
    server.stop()


@pytest.fixture
def store(moto_endpoint: str) -> Store:
    suffix = uuid.uuid4().hex[:8]
    s = Store(make_client(moto_endpoint, "us-east-1"), f"keys-{suffix}", f"counters-{suffix}")
    s.create_tables()
    return s


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    store: Store
    server: ServerThread

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
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {secret}"}, timeout=30, **kwargs)

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
        **settings: Any,
    ) -> RunningGateway:
        env = {"TEST_UPSTREAM_KEY": "sk-upstream-secret-do-not-leak", **(environ or {})}
        cfg = parse_config(config or models_config(upstream.base_url), env)
        base = {"keepalive_seconds": 5.0, "key_cache_seconds": 0.5}
        base.update(settings)
        s = Settings(
            keys_table=store.keys_table,
            counters_table=store.counters_table,
            dynamodb_endpoint=moto_endpoint,
            **base,
        )
        async_store = AsyncStore(Store(make_client(moto_endpoint, "us-east-1"), store.keys_table, store.counters_table))
        gateway = Gateway(s, cfg, async_store, hooks=hooks)
        server = ServerThread(create_app(gateway)).start()
        running = RunningGateway(server.url, gateway, store, server)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop()


def wait_for_fresh_window(margin: float = 8.0) -> None:
    """Rate windows are calendar minutes: start a counting test well inside one."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.2)


def sse_events(raw: str) -> list[str]:
    """The ``data`` payloads of an SSE body, in order (multi-line data joined with LF)."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        lines = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            events.append("\n".join(lines))
    return events


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until ``check()`` is truthy: post-call work finishes just after the response."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


CHAT = {"model": "my-gpt4-mini", "messages": [{"role": "user", "content": "Tell me a story"}]}
