"""`make run`'s command, as a new user runs it: the seed's examples work against it unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent

SEED_REQUEST = {
    "model": "my-gpt4-mini",
    "messages": [{"role": "user", "content": "Tell me a long story about a brave little API gateway."}],
    "stream": True,
}


@pytest.fixture(scope="module")
def local_gateway():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISIX_", "OPENAI_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "aisix", "serve", "--local", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("make run's gateway did not start:\n" + (process.stdout.read() or ""))
        time.sleep(0.2)
    yield url, process
    process.send_signal(signal.SIGINT)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def test_the_seed_curl_request_streams_with_the_demo_key(local_gateway):
    url, _ = local_gateway
    headers = {"Authorization": "Bearer my-secret-key", "Content-Type": "application/json"}
    contents, done = [], False
    with httpx.stream("POST", url + "/v1/chat/completions", headers=headers, json=SEED_REQUEST, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    contents.append(chunk["choices"][0]["delta"]["content"])
    assert done
    assert len(contents) > 20
    assert "".join(contents).startswith("Once upon a time, a brave little API gateway")


def test_the_openai_sdk_works_against_make_run(local_gateway):
    url, _ = local_gateway
    client = openai.OpenAI(api_key="my-secret-key", base_url=url + "/v1", max_retries=0)
    completion = client.chat.completions.create(
        model="my-gpt4-mini", messages=[{"role": "user", "content": "Hello"}], extra_body={"mock": {"words": 5}}
    )
    assert completion.choices[0].message.content == "Once upon a time, a"
    assert [m.id for m in client.models.list().data] == ["my-gpt4-mini"]


def test_the_log_says_the_upstream_is_a_mock_and_prints_the_demo_key(local_gateway):
    url, process = local_gateway
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=15)
    assert "MOCK" in output and "not a real model" in output
    assert "my-secret-key" in output
    assert "token charge lost" not in output, "pending charges are written before moto stops"
