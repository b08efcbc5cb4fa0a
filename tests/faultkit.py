"""Tools for the fault tests: a faulty DynamoDB, raw HTTP clients that misbehave, task probes,
and an in-process gateway (memory store, scripted upstream) for property-based tests.

Everything here talks to a gateway over HTTP or plain ASGI, so the same scenarios can be
run against any front (uvicorn today; the Lambda streaming runtime later): see `Front`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable

import botocore.session
import httpx
from botocore.config import Config

from aisix.auth import hash_key, key_id_for
from aisix.config import Settings, parse_config
from aisix.gateway import Gateway
from aisix.hooks import Hook
from aisix.local.mocks import read_body
from aisix.store import KeyRecord, Usage, window_start
from aisix.usage import estimate_prompt_tokens, estimate_tokens

# --- charges -------------------------------------------------------------------------------


def charged(store: Any, key_id: str) -> int:
    """Tokens charged to a key in this window and the previous one (a test may straddle a minute)."""
    now = time.time()
    return store.read_window(key_id, now).tokens + store.read_window(key_id, now - 60).tokens


def estimate(body: dict[str, Any], completion_chars: int = 0) -> int:
    """What the gateway charges when the upstream reports no usage."""
    return estimate_prompt_tokens(body) + estimate_tokens(completion_chars)


def settled(read: Callable[[], int], quiet: float = 0.4, timeout: float = 5.0) -> int:
    """A counter's value once it has stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return value


# --- a faulty DynamoDB -----------------------------------------------------------------------

_ERRORS = {
    "throttle": (400, "ThrottlingException", "Rate of requests exceeds the allowed throughput."),
    "provisioned": (400, "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded."),
    "internal": (500, "InternalServerError", "Internal server error"),
}


@dataclass
class Rule:
    mode: str  # throttle | provisioned | internal | hang | apply_then_hang
    op: str | None = None  # e.g. "GetItem", "UpdateItem"; None: every call
    match: bytes | None = None  # only calls whose body contains this
    times: int | None = None  # None: for ever
    hits: int = 0


class DynamoFaults:
    """A DynamoDB endpoint in front of moto that fails the calls it is told to fail.

    Modes answer as DynamoDB does (HTTP 400 with ``__type`` for throttling), or never
    answer (``hang``: a time-out), or apply the call and then never answer
    (``apply_then_hang``: the write happened, the caller cannot know).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.rules: list[Rule] = []
        self.seen: list[str] = []
        self.forwarded: list[tuple[str, bytes]] = []  # (operation, body) of calls moto has answered
        self._client: httpx.AsyncClient | None = None

    def fail(self, mode: str, op: str | None = None, match: bytes | None = None, times: int | None = None) -> Rule:
        rule = Rule(mode, op, match, times)
        self.rules.append(rule)
        return rule

    def heal(self) -> None:
        self.rules.clear()

    def answered(self, op: str, match: bytes) -> int:
        """How many ``op`` calls whose body holds ``match`` moto has applied."""
        return sum(1 for o, body in self.forwarded if o == op and match in body)

    def _rule(self, op: str, body: bytes) -> Rule | None:
        for rule in self.rules:
            if rule.op not in (None, op) or (rule.match is not None and rule.match not in body):
                continue
            if rule.times is not None and rule.hits >= rule.times:
                continue
            rule.hits += 1
            return rule
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    return
        body = await read_body(receive)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.lower() != b"host"]
        op = dict(headers).get("x-amz-target", "").rpartition(".")[2]
        self.seen.append(op)
        rule = self._rule(op, body)
        if rule is not None and rule.mode in _ERRORS:
            status, kind, text = _ERRORS[rule.mode]
            payload = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{kind}", "message": text}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/x-amz-json-1.0")]})
            await send({"type": "http.response.body", "body": payload})
            return
        if rule is not None and rule.mode == "hang":
            await _until_gone(receive)
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        forwarded = await self._client.post(self.target + scope["path"], content=body, headers=headers)
        self.forwarded.append((op, body))
        if rule is not None and rule.mode == "apply_then_hang":
            await _until_gone(receive)
            return
        await send({"type": "http.response.start", "status": forwarded.status_code,
                    "headers": [(b"content-type", forwarded.headers.get("content-type", "").encode())]})
        await send({"type": "http.response.body", "body": forwarded.content})


async def _until_gone(receive: Any, limit: float = 30.0) -> None:
    try:
        await asyncio.wait_for(receive(), limit)  # the body is read: the next message is the disconnect
    except asyncio.TimeoutError:
        pass


def dynamodb_client(endpoint: str, attempts: int = 1, timeout: float = 1.5) -> Any:
    """A botocore DynamoDB client like `aisix.store.make_client`'s, one attempt by default. The
    time-out is what a silent DynamoDB costs a test; a healthy call must also fit in it on a
    machine whose cores are busy, hence not shorter."""
    config = Config(
        region_name="us-east-1",
        max_pool_connections=32,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
    )
    return botocore.session.get_session().create_client("dynamodb", endpoint_url=endpoint, config=config)


# --- misbehaving clients ---------------------------------------------------------------------


class RawClient:
    """One HTTP/1.1 request over a plain socket, so a test decides exactly when to stop reading
    or hang up (httpx would read ahead, retry or close politely)."""

    def __init__(self, url: str, path: str, body: dict[str, Any], secret: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.settimeout(10)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + payload)
        self.received = bytearray()

    def read_until(self, predicate: Callable[[bytearray], bool], timeout: float = 10.0) -> bytearray:
        deadline = time.monotonic() + timeout
        while not predicate(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting; got {bytes(self.received[:300])!r}")
            piece = self.sock.recv(1 << 20)
            if not piece:
                break
            self.received += piece
        return self.received

    def hang_up(self) -> float:
        """Close the connection (FIN, as a client process that goes away); the time it happened."""
        self.sock.close()
        return time.monotonic()


def content_of(raw: bytes | bytearray) -> str:
    """The assistant text in the SSE events of a raw (chunked) HTTP response read so far."""
    text = ""
    for line in raw.decode("utf-8", "replace").split("\n"):
        if line.startswith("data: {"):
            try:
                chunk = json.loads(line[6:])
            except ValueError:
                continue  # a line cut by the chunked framing or the read
            for choice in chunk.get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return text


# --- tasks -----------------------------------------------------------------------------------


class LoopProbe(Hook):
    """A hook that notes the gateway's event loop, so a test can list the tasks running on it."""

    loop: asyncio.AbstractEventLoop | None = None

    async def pre_call(self, call: Any) -> None:
        self.loop = asyncio.get_running_loop()

    def tasks(self) -> list[str]:
        assert self.loop is not None, "no call went through the gateway yet"

        async def names() -> list[str]:
            me = asyncio.current_task()
            return sorted(_describe(t) for t in asyncio.all_tasks() if t is not me and not t.done())

        try:
            return asyncio.run_coroutine_threadsafe(names(), self.loop).result(5)
        except FutureTimeout:
            raise AssertionError("the gateway's event loop did not answer within 5 s") from None


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or repr(coro)


def lingering(probe: LoopProbe, baseline: list[str], timeout: float = 1.0) -> list[str]:
    """Tasks on the gateway's loop beyond ``baseline``, once they had ``timeout`` seconds to end."""
    deadline = time.monotonic() + timeout
    while True:
        extra = list(probe.tasks())
        for name in baseline:
            if name in extra:
                extra.remove(name)
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


# --- an in-process gateway for property tests ------------------------------------------------


class MemoryStore:
    """The `AsyncStore` interface in memory: keys, and counters that never refuse."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.tokens = 0

    def add_key(self, secret: str, models: frozenset[str] | None = None, enabled: bool = True) -> KeyRecord:
        key_hash = hash_key(secret)
        record = KeyRecord(key_id_for(key_hash), key_hash, "mem", models, None, None, enabled)
        self.keys[key_hash] = record
        return record

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        return self.keys.get(key_hash)

    async def take(self, key_id: str, window: int, requests: int, rpm: int | None, tpm: int | None) -> Usage:
        return Usage(requests, self.tokens, window)

    async def add(self, key_id: str, window: int, requests: int = 0, tokens: int = 0) -> Usage:
        self.tokens += tokens
        return Usage(0, self.tokens, window_start())

    def close(self) -> None:
        pass


@dataclass
class InProcess:
    """A gateway app driven in-process: memory store, upstream answered by ``upstream(request)``."""

    upstream: Callable[[httpx.Request], httpx.Response]
    models: tuple[str, ...] = ("m", "Other-Model")
    store: MemoryStore = field(default_factory=MemoryStore)

    def __post_init__(self) -> None:
        from aisix.app import create_app

        config = parse_config({"models": [
            {"name": name, "model": f"up-{name}", "base_url": "http://upstream.test/v1", "timeout": 5,
             "api_key_env": "UPSTREAM_KEY"}
            for name in self.models
        ]}, {"UPSTREAM_KEY": "sk-upstream-secret-do-not-leak"})
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.upstream))
        self.gateway = Gateway(Settings(key_cache_seconds=60), config, self.store, client=client, hooks=[])  # type: ignore[arg-type]
        self.app = create_app(self.gateway)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway.test")

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)
