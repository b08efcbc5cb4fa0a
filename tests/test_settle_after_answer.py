"""The client's answer never waits for settlement (DynamoDB writes, post_call hooks)."""

from __future__ import annotations

import threading

import pytest

from aisix.hooks import Hook
from conftest import CHAT, eventually, sse_events


class SlowSettlement(Hook):
    """A post_call that cannot finish until the test lets it: a stand-in for a slow DynamoDB write."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished: list = []

    async def post_call(self, call):
        import asyncio

        while not self.release.is_set():
            await asyncio.sleep(0.01)
        self.finished.append(call)


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_is_complete_before_settlement_ends(start_gateway, stream):
    hook = SlowSettlement()
    gw = start_gateway(hooks=[hook])
    try:
        with gw.client(gw.key(tpm=100_000), timeout=15) as client:
            response = client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            # The whole answer has arrived while post_call is still held.
            assert response.status_code == 200
            if stream:
                assert sse_events(response.text)[-1] == "[DONE]"
            else:
                assert response.json()["choices"][0]["message"]["content"]
            assert not hook.finished  # settlement held: had the answer waited for it, it would never have come
    finally:
        hook.release.set()
    (call,) = eventually(lambda: hook.finished)
    assert call.usage is not None and call.usage.total_tokens > 0
