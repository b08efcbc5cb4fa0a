"""A client that hangs up is normal traffic, not an error: no ERROR record, nothing charged.

Under load, clients that gave up while still sending their request body were logged as
"unhandled error" tracebacks (starlette's ``ClientDisconnect`` out of the body read).
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

import pytest

from aisix.call import Call
from aisix.hooks import Hook
from conftest import CHAT, RunningGateway, eventually


class Seen(Hook):
    """Records every call post_call sees: the sign that the gateway is done with it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def post_call(self, call: Call) -> None:
        self.calls.append(call)


def half_a_body(gw: RunningGateway, secret: str, path: str, headers: dict[str, str] | None = None) -> None:
    """Send the headers and half of the declared body, then close the connection."""
    body = (b'{"model": "my-gpt4-mini", "messages": [{"role": "user", "content": "' + b"x" * 400 + b'"}]}')
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{gw.server.port}", "content-type: application/json",
            f"content-length: {len(body)}", f"authorization: Bearer {secret}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", gw.server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"])
def test_client_leaving_mid_body_logs_no_error_and_charges_nothing(
    start_gateway: Callable[..., RunningGateway], upstream: Any, caplog: pytest.LogCaptureFixture, path: str,
) -> None:
    seen = Seen()
    gw = start_gateway(hooks=[seen])
    secret = gw.key(tpm=1_000_000, rpm=1_000)
    sent_before = len(upstream.requests())
    caplog.set_level(logging.DEBUG)

    half_a_body(gw, secret, path, {"x-api-key": secret, "anthropic-version": "2023-06-01"})
    if path == "/v1/messages/count_tokens":  # no post_call for a free count: wait for the debug line instead
        assert eventually(lambda: any("left" in r.getMessage() for r in caplog.records if r.name.startswith("aisix")))
    else:
        assert eventually(lambda: seen.calls), "the gateway never finished the call"
        [call] = seen.calls
        assert call.client_disconnected and call.status == 499
        assert call.usage is None  # the upstream never saw it: nothing to charge

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert len(upstream.requests()) == sent_before
    assert gw.window(secret).requests == 0 and gw.window(secret).tokens == 0
    # And the gateway serves the next call as usual.
    with gw.client(secret) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
