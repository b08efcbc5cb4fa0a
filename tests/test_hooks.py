"""The hook pipeline: user hooks from the config, order, phases, failure isolation."""

from __future__ import annotations

import asyncio
import time

import pytest

import example_hooks
from aisix.hooks import Call, Hook, Pipeline, RateLimitHook, load_hook
from aisix.store import KeyRecord
from conftest import CHAT, eventually, models_config


def test_a_user_hook_from_the_config_runs_for_streamed_and_plain_calls(start_gateway, upstream):
    config = models_config(upstream.base_url, hooks=["example_hooks:BlockWordHook"])
    gw = start_gateway(config=config, hooks=None)
    example_hooks.SEEN.clear()
    with gw.client(gw.key()) as client:
        plain = client.post("/v1/chat/completions", json=CHAT)
        streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        blocked = client.post(
            "/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "a forbidden word"}]}
        )
    assert plain.headers["x-example-hook"] == streamed.headers["x-example-hook"] == "seen"
    assert blocked.status_code == 400
    assert blocked.json()["error"] == {
        "message": "This prompt is not allowed here.", "type": "invalid_request_error", "param": "messages",
        "code": "blocked",
    }
    # post_call runs after each answer has left, so the three may finish in any order.
    seen = sorted(eventually(lambda: len(example_hooks.SEEN) == 3 and example_hooks.SEEN),
                  key=lambda s: (s["status"], s["stream"]))
    assert [(s["stream"], s["status"]) for s in seen] == [(False, 200), (True, 200), (False, 400)]
    assert all(s["usage"].total_tokens > 0 for s in seen[:2])
    assert seen[2]["usage"] is None, "a call refused before the upstream is charged nothing"


def test_post_call_hooks_see_every_refused_call(start_gateway):
    """401, 404, 403, 429 and a hook's own refusal all reach post_call, with their error and no usage."""

    class Audit(Hook):
        def __init__(self):
            self.calls = []

        async def post_call(self, call):
            self.calls.append((call.status, call.error.code if call.error else None, call.usage,
                               call.key.key_id if call.key else None))

    audit = Audit()
    gw = start_gateway(hooks=[audit])
    limiter = next(h for h in gw.gateway.pipeline.hooks if isinstance(h, RateLimitHook))
    now = time.time()
    limiter.quota.clock = lambda: now  # one rate window for the whole test
    secret = gw.key(models={"my-gpt4-mini"}, rpm=1)
    with gw.client("sk-not-a-key") as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
    with gw.client(secret) as client:
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}).status_code == 404
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "other-model"}).status_code == 403
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 429
    calls = eventually(lambda: len(audit.calls) == 5 and audit.calls)
    key_id = gw.key_id(secret)
    assert calls[0] == (401, "invalid_api_key", None, None)
    assert calls[1] == (404, "model_not_found", None, key_id)
    assert calls[2] == (403, "model_not_allowed", None, key_id)
    assert calls[3][0] == 200 and calls[3][2] is not None
    assert calls[4] == (429, "rate_limit_exceeded", None, key_id)


def test_builtin_hooks_run_before_user_hooks(start_gateway):
    """An unknown model is refused by ValidateModelHook before a user hook could see it."""
    calls = []

    class Spy(Hook):
        async def pre_call(self, call):
            calls.append(call.model.name)

    gw = start_gateway(hooks=[Spy()])
    with gw.client(gw.key()) as client:
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}).status_code == 404
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert calls == ["my-gpt4-mini"]


def test_model_allow_list_cannot_be_bypassed_by_casing(start_gateway):
    gw = start_gateway()
    with gw.client(gw.key(models={"other-model"})) as client:
        for alias in ("my-gpt4-mini", "MY-GPT4-MINI", "My-Gpt4-Mini ", "gpt-4o-mini"):
            assert client.post("/v1/chat/completions", json={**CHAT, "model": alias}).status_code in (403, 404)


def test_pipeline_skips_hooks_without_a_phase_and_isolates_post_call_failures(caplog):
    order = []

    class First(Hook):
        async def pre_call(self, call):
            order.append("first")

    class Broken(Hook):
        async def post_call(self, call):
            raise RuntimeError("boom")

    class Last(Hook):
        async def post_call(self, call):
            order.append("last")

    pipeline = Pipeline([First(), Broken(), Last()])
    assert pipeline.chunk_hooks == ()
    call = Call(key=KeyRecord("k", "h", "n", None, None, None), model_name="m", body={}, stream=False)
    asyncio.run(pipeline.pre_call(call))
    asyncio.run(pipeline.post_call(call))
    assert order == ["first", "last"]
    assert "Broken" in caplog.text


def test_load_hook_reports_bad_paths():
    assert type(load_hook("example_hooks:BlockWordHook")).__name__ == "BlockWordHook"
    with pytest.raises(ValueError, match="cannot load hook"):
        load_hook("example_hooks:Missing")
    with pytest.raises(ValueError, match="must subclass"):
        load_hook("example_hooks:SEEN")
