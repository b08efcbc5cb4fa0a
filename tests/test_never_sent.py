"""A call whose request never left the gateway is never charged, whatever cut it off."""

from __future__ import annotations

import socket

import httpx
import pytest

from aisix.hooks import Hook
from conftest import CHAT, eventually, models_config


class Usage(Hook):
    def __init__(self) -> None:
        self.calls: list = []

    async def post_call(self, call):
        self.calls.append(call)


@pytest.fixture
def black_hole():
    """A listener whose accept queue is full: a connection to it hangs in the kernel, never accepted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname())
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    filler.close()
    server.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_the_gateway_connects_is_not_charged(start_gateway, upstream, black_hole, stream):
    config = models_config(upstream.base_url)
    config["models"].append({"name": "black-hole", "model": "m", "base_url": black_hole, "timeout": 30})
    usage = Usage()
    gw = start_gateway(config=config, hooks=[usage])
    secret = gw.key(tpm=100_000)
    with gw.client(secret, timeout=httpx.Timeout(30, read=0.5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json={**CHAT, "model": "black-hole", "stream": stream})
        # The same client then makes a call that reaches the upstream: it is charged.
        assert client.post("/v1/chat/completions", json={**CHAT, "stream": stream}).status_code == 200
    calls = eventually(lambda: len(usage.calls) == 2 and usage.calls, timeout=30)
    left, answered = sorted(calls, key=lambda c: c.model_name != "black-hole")
    assert left.status == 499
    assert left.usage is None, "the request never left: nothing to charge"
    assert answered.usage is not None and answered.usage.total_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_the_upstream_thinks_is_charged(start_gateway, stream):
    """The counterpart: once the request has left, the upstream may be working on it."""
    usage = Usage()
    gw = start_gateway(hooks=[usage])
    with gw.client(gw.key(tpm=100_000), timeout=httpx.Timeout(30, read=0.5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json={**CHAT, "stream": stream, "mock": {"first_byte_delay": 5}})
    (left,) = eventually(lambda: usage.calls, timeout=30)
    assert left.status == 499
    assert left.usage is not None and left.usage_estimated and left.usage.prompt_tokens > 0
