"""One gateway in front of every provider's loopback mock, for the end-to-end tests with the official SDKs
(`test_matrix.py`, `test_sdks.py`).

`start_stack` serves a real gateway (uvicorn on loopback, keys and counters in moto) whose models
file names one alias per provider, each aliased by the provider's name (Azure twice: ``azure``, a
dated api-version deployment, and ``azure-v1``, the v1 API). The SDK clients made here go through a
`Tap`, which keeps what went over the wire: the request body, and every byte of the answer.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import anthropic
import httpx2
import openai

from aisix.app import create_app
from aisix.auth import hash_key, issue_key, key_id_for
from aisix.config import Settings, parse_config
from aisix.gateway import Gateway
from aisix.local.mock_upstream import STORY, MockUpstream
from aisix.local.mocks.anthropic import AnthropicMock
from aisix.local.mocks.azure import AzureOpenAIMock
from aisix.local.mocks.bedrock import BedrockMock
from aisix.local.mocks.gemini import GeminiMock
from aisix.store import AsyncStore, Store, make_client
from conftest import ServerThread, eventually, window_total

WORDS = 8
TEXT = " ".join(STORY[:WORDS])  # every mock's answer without a directive

PROVIDERS = ("openai", "azure", "azure-v1", "anthropic", "bedrock", "gemini")
EMBEDDING_PROVIDERS = ("openai", "azure", "azure-v1", "gemini")
ENV = {"MATRIX_OPENAI_KEY": "sk-openai-upstream", "MATRIX_AZURE_KEY": "azure-upstream-key",
       "MATRIX_ANTHROPIC_KEY": "sk-ant-upstream", "MATRIX_GEMINI_KEY": "gemini-upstream-key"}


def model_entries(urls: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"name": "openai", "provider": "openai", "model": "gpt-4o-mini", "base_url": urls["openai"] + "/v1",
         "api_key_env": "MATRIX_OPENAI_KEY", "timeout": 10},
        {"name": "azure", "provider": "azure", "model": "my-deployment", "base_url": urls["azure"],
         "api_key_env": "MATRIX_AZURE_KEY", "api_version": "2024-10-21", "timeout": 10},
        {"name": "azure-v1", "provider": "azure", "model": "my-deployment", "base_url": urls["azure"],
         "api_key_env": "MATRIX_AZURE_KEY", "api_version": "v1", "timeout": 10},
        {"name": "anthropic", "provider": "anthropic", "model": "claude-sonnet-4-5", "base_url": urls["anthropic"],
         "api_key_env": "MATRIX_ANTHROPIC_KEY", "timeout": 10},
        # Signed with SigV4 from the test credentials conftest puts in the environment.
        {"name": "bedrock", "provider": "bedrock", "model": "amazon.nova-lite-v1:0", "region": "us-east-1",
         "base_url": urls["bedrock"], "timeout": 10, "max_tokens": 512},
        {"name": "gemini", "provider": "gemini", "model": "gemini-2.5-flash", "base_url": urls["gemini"],
         "api_key_env": "MATRIX_GEMINI_KEY", "timeout": 10},
    ]


class Tap(httpx2.BaseTransport):
    """A transport that keeps the last request's body and every byte of its response, even
    those the SDK did not read before it raised (the rest is drained when the SDK closes it)."""

    def __init__(self, pool: httpx2.BaseTransport) -> None:
        self.pool = pool
        self.sent: dict[str, Any] = {}
        self.received = bytearray()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent = json.loads(request.content) if request.content else {}
        self.received = received = bytearray()
        response = self.pool.handle_request(request)
        inner = response.stream

        class Tapped(httpx2.SyncByteStream):
            started = finished = broken = False

            def __iter__(self) -> Iterator[bytes]:
                self.started = True
                try:
                    for chunk in inner:
                        received.extend(chunk)
                        yield chunk
                except GeneratorExit:  # the SDK stopped reading: close() drains the rest
                    raise
                except BaseException:  # the stream itself failed (a time-out): nothing more to drain
                    self.broken = True
                    raise
                self.finished = True

            def close(self) -> None:
                # Never iterate a failed stream again: httpcore can spin on a connection in that state.
                if self.started and not self.finished and not self.broken:
                    try:
                        for chunk in inner:
                            received.extend(chunk)
                    except Exception:  # a broken stream: what came is kept
                        pass
                inner.close()

        response.stream = Tapped()
        return response


@dataclass
class Stack:
    url: str
    store: Store
    mocks: dict[str, Any]
    pool: httpx2.HTTPTransport  # one connection pool for every client (a transport costs ~0.1 s to make)

    def key(self, models: set[str] | None = None) -> str:
        """A fresh key with limits (so its usage is counted) far above what a test uses."""
        secret, _ = issue_key(self.store, "sdk", frozenset(models) if models else None, rpm=100_000,
                              tpm=1_000_000_000)
        return secret

    def tokens(self, secret: str) -> int:
        return window_total(self.store, key_id_for(hash_key(secret))).tokens

    def charged(self, secret: str, tokens: int) -> None:
        """The key's counters reach ``tokens`` (charges are written just after the answer)."""
        assert eventually(lambda: self.tokens(secret) == tokens), (self.tokens(secret), tokens)

    def charged_nothing(self, secret: str) -> None:
        assert self.tokens(secret) == 0

    def openai(self, secret: str) -> tuple[openai.OpenAI, Tap]:
        tap = Tap(self.pool)
        return openai.OpenAI(api_key=secret, base_url=self.url + "/v1", max_retries=0, timeout=20,
                             http_client=httpx2.Client(transport=tap)), tap

    def anthropic(self, secret: str) -> tuple[anthropic.Anthropic, Tap]:
        tap = Tap(self.pool)
        return anthropic.Anthropic(api_key=secret, base_url=self.url, max_retries=0, timeout=20,
                                   http_client=httpx2.Client(transport=tap)), tap


@contextlib.contextmanager
def start_stack(moto_endpoint: str) -> Iterator[Stack]:
    mocks: dict[str, Any] = {
        "openai": MockUpstream(words=WORDS),
        "azure": AzureOpenAIMock(api_key=ENV["MATRIX_AZURE_KEY"], words=WORDS),
        "anthropic": AnthropicMock(words=WORDS),
        "bedrock": BedrockMock(secret_key="testing", words=WORDS),  # checks the signature as AWS would
        "gemini": GeminiMock(api_key=ENV["MATRIX_GEMINI_KEY"], words=WORDS),
    }
    servers = {name: ServerThread(mock).start() for name, mock in mocks.items()}
    suffix = uuid.uuid4().hex[:8]
    store = Store(make_client(moto_endpoint, "us-east-1"), f"keys-sdk-{suffix}", f"counters-sdk-{suffix}")
    store.create_tables()
    config = parse_config({"models": model_entries({n: s.url for n, s in servers.items()})}, ENV)
    settings = Settings(keys_table=store.keys_table, counters_table=store.counters_table,
                        dynamodb_endpoint=moto_endpoint, keepalive_seconds=5.0, key_cache_seconds=0.5,
                        token_flush_seconds=0.05)
    gateway_store = AsyncStore(Store(make_client(moto_endpoint, "us-east-1"), store.keys_table, store.counters_table))
    server = ServerThread(create_app(Gateway(settings, config, gateway_store))).start()
    pool = httpx2.HTTPTransport()
    try:
        yield Stack(server.url, store, mocks, pool)
    finally:
        pool.close()
        everything = (server, *servers.values())
        for running in everything:  # all told at once: each may wait a little for its connections
            running.request_stop()
        for running in everything:
            running.stop()
