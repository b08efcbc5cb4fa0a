"""The README's hooks example, run as printed: a user copies it, so it must not crash on any call."""

from __future__ import annotations

import asyncio
import logging
import re
import types
from pathlib import Path

import pytest

from aisix.errors import GatewayError
from aisix.hooks import Call
from conftest import CHAT, eventually

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_hooks_module() -> types.ModuleType:
    section = README.read_text().split("\n## Hooks\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the Hooks section has a python example"
    module = types.ModuleType("readme_hooks")
    exec(compile(code.group(1), "README.md#hooks", "exec"), module.__dict__)
    return module


def test_the_hooks_example_handles_calls_with_nothing_known():
    """A call refused before authentication has no key, no usage, no model; a body may hold anything."""
    hook = readme_hooks_module().AuditHook()
    refused = Call(key=None, model_name="", body={}, stream=False)
    refused.error, refused.status = GatewayError(401, "Invalid API key."), 401
    asyncio.run(hook.post_call(refused))
    asyncio.run(hook.pre_call(Call(key=None, model_name="m", body={"temperature": "hot"}, stream=True)))
    with pytest.raises(GatewayError) as info:
        asyncio.run(hook.pre_call(Call(key=None, model_name="m", body={"temperature": 2}, stream=False)))
    assert info.value.status == 400 and info.value.param == "temperature"


def test_the_hooks_example_runs_in_a_gateway_without_failing(start_gateway, caplog):
    module = readme_hooks_module()
    gw = start_gateway(hooks=[module.AuditHook()])
    caplog.set_level(logging.INFO)
    with gw.client(gw.key()) as client:
        assert client.post("/v1/chat/completions", json={**CHAT, "stream": True}).status_code == 200
        assert client.post("/v1/chat/completions", json={**CHAT, "temperature": 1.9}).status_code == 400
        client.headers["authorization"] = "Bearer sk-aisix-not-a-key"
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 401

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "my_package.hooks"]

    assert eventually(lambda: {"status=200", "status=400"} <= {w for line in lines() for w in line.split()}), lines()
    assert any("status=200" in line and "chunks=0" not in line for line in lines()), "on_chunk counted the stream"
    assert not [r for r in caplog.records if "hook" in r.getMessage() and "failed" in r.getMessage()]
