"""`make run`'s command, as a new user runs it: the seed's examples work against it unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent

# What local mode serves (aisix/local/models.local.yaml), each alias on its provider's mock.
LOCAL_MODELS = ["my-gpt4-mini", "my-claude", "my-gemini", "my-azure", "my-nova", "my-embeddings"]
PROVIDER_MOCKS = ["aisix.local.mocks.anthropic", "aisix.local.mocks.gemini", "aisix.local.mocks.azure",
                  "aisix.local.mocks.bedrock"]
SEED_REQUEST = {
    "model": "my-gpt4-mini",
    "messages": [{"role": "user", "content": "Tell me a long story about a brave little API gateway."}],
    "stream": True,
}


def local_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISIX_", "OPENAI_"))}
    env.update(extra)
    return env


def start_local(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`make run`'s command (``args`` added), in its own process group as a shell starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aisix", "serve", "--local", "--port", str(port), *args],
        cwd=ROOT, env=env or local_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        process_group=0,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("make run's gateway did not start:\n" + (process.stdout.read() or ""))
        time.sleep(0.2)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process; None once it is gone (a zombie counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (fields[0], int(fields[1]))


def descendants(pid: int) -> dict[int, str]:
    """Every live process under ``pid``, with its command line."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            parents[int(entry.name)] = stat[1]
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(child)
    return found


def children_running(process: subprocess.Popen[str], *modules: str, timeout: float = 30) -> dict[int, str]:
    """The processes under ``process`` once one runs each of ``modules``."""
    deadline = time.monotonic() + timeout
    while True:
        found = descendants(process.pid)
        if all(any(f"-m {m} " in cmd + " " for cmd in found.values()) for m in modules):
            return found
        assert time.monotonic() < deadline, f"expected {modules} under {process.pid}, found {found}"
        time.sleep(0.1)


def assert_all_gone(pids: dict[int, str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while alive := {pid: cmd for pid, cmd in pids.items() if _stat(pid) is not None}:
        assert time.monotonic() < deadline, f"still running after the gateway stopped: {alive}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def local_gateway():
    process, url = start_local()
    yield url, process
    if process.poll() is None:
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
    assert sorted(m.id for m in client.models.list().data) == sorted(LOCAL_MODELS), "the demo key may use them all"


def test_the_anthropic_sdk_reaches_the_anthropic_mock_through_make_run(local_gateway):
    """/v1/messages with the demo key as x-api-key: passed through to the Anthropic mock, streamed and not."""
    url, _ = local_gateway
    client = anthropic.Anthropic(api_key="my-secret-key", base_url=url, max_retries=0)
    prompt = [{"role": "user", "content": "Hello #mock words=5"}]
    message = client.messages.create(model="my-claude", max_tokens=64, messages=prompt)
    assert message.model == "claude-sonnet-4-5", "the Anthropic mock answered (the upstream's model id)"
    assert message.content[0].text == "Once upon a time, a"
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
    with client.messages.stream(model="my-claude", max_tokens=64, messages=prompt) as stream:
        assert stream.get_final_text() == "Once upon a time, a"
    count = client.messages.count_tokens(model="my-claude", messages=prompt)
    assert count.input_tokens > 0


def test_the_openai_sdk_gets_embeddings_through_make_run(local_gateway):
    url, _ = local_gateway
    client = openai.OpenAI(api_key="my-secret-key", base_url=url + "/v1", max_retries=0)
    answer = client.embeddings.create(model="my-embeddings", input=["a brave little gateway", "a mock"])
    assert [item.index for item in answer.data] == [0, 1]
    first, second = (item.embedding for item in answer.data)
    assert len(first) == len(second) > 0 and first != second
    assert answer.usage.prompt_tokens > 0
    again = client.embeddings.create(model="my-embeddings", input="a brave little gateway")
    assert again.data[0].embedding == first, "the same text, the same vector"


@pytest.mark.parametrize("model", ["my-gemini", "my-azure", "my-nova"])
def test_every_local_provider_answers_the_openai_sdk(local_gateway, model):
    url, _ = local_gateway
    client = openai.OpenAI(api_key="my-secret-key", base_url=url + "/v1", max_retries=0)
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello #mock words=5"}]
    )
    assert completion.choices[0].message.content == "Once upon a time, a"


def test_the_log_says_the_upstream_is_a_mock_and_prints_the_demo_key(local_gateway):
    """And Ctrl-C (SIGINT to the terminal's whole process group) stops everything, charges written first."""
    url, process = local_gateway
    children = children_running(process, "moto.server", "aisix.local.mock_upstream", *PROVIDER_MOCKS)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert "MOCK" in output and "not a real model" in output
    assert "my-secret-key" in output
    assert "token charge lost" not in output, "pending charges are written before moto stops"
    assert "Traceback" not in output
    assert_all_gone(children)


LAMBDA_RUNTIME = "aisix.lambda_runtime"


@pytest.mark.parametrize("path", ["serve", "lambda"])
def test_sigterm_stops_everything_it_started(path):
    """uvicorn re-raises SIGTERM once it has shut down: moto, the mocks (and the runtime) must not outlive it."""
    modules = ["moto.server", "aisix.local.mock_upstream", *PROVIDER_MOCKS]
    modules += [LAMBDA_RUNTIME] if path == "lambda" else []
    process, url = start_local(*(["--lambda"] if path == "lambda" else []))
    children: dict[int, str] = {}
    try:
        children = children_running(process, *modules)
        process.send_signal(signal.SIGTERM)
        # The children share the output pipe: it ends once the last of them is gone.
        output, _ = process.communicate(timeout=30)
        assert "Traceback" not in output, output
        assert_all_gone(children)
    finally:
        for pid in [process.pid, *children]:  # never leak them into the rest of the suite
            if _stat(pid) is not None:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("path", ["serve", "lambda"])
def test_a_config_mistake_under_make_run_is_one_line_and_leaves_nothing_running(tmp_path, path):
    """moto and the mock start before the gateway loads its models file: they are stopped when it fails.

    On the Lambda path the runtime process would crash at init and be restarted every second:
    the mistake is found before it starts."""
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n  - name: my-gpt4-mini\n    model: m\n    base_url: http://127.0.0.1:9/v1\n"
        "    api_key_env: AISIX_TEST_UNSET_UPSTREAM_KEY\n"
    )
    env = local_env(AISIX_CONFIG=str(models))
    result = subprocess.run(
        [sys.executable, "-m", "aisix", "serve", "--local", "--port", str(free_port()),
         *(["--lambda"] if path == "lambda" else [])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "model 'my-gpt4-mini'" in result.stderr and "AISIX_TEST_UNSET_UPSTREAM_KEY" in result.stderr
    marker = f"AISIX_CONFIG={models}".encode()
    leftovers = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                leftovers.append(entry.name)
        except OSError:
            continue
    assert not leftovers, "children of the failed start still run"


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def test_make_sam_local_deps_serves_the_local_stack_where_a_container_reaches_it():
    """What env.json points `sam local start-api` at: moto and the mock on every interface, tables and demo key made."""
    from aisix.auth import hash_key
    from aisix.local.run import sam_env
    from aisix.store import Store, StoreUnavailable, make_client

    make = ["make", "-s", "-o", ".venv/.installed", "sam-local-deps"]  # -o: no venv set-up from a test
    planned = subprocess.run([*make, "-n"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    assert "local-deps --host 0.0.0.0 --dynamodb-port 3005 --upstream-port 3006" in planned
    assert json.loads((ROOT / "env.json").read_text()) == sam_env(3005, 3006), "env.json names the target's ports"

    ddb_port, upstream_port = free_port(), free_port()
    process = subprocess.Popen(
        [*make, f"SAM_DEPS_DYNAMODB_PORT={ddb_port}", f"SAM_DEPS_UPSTREAM_PORT={upstream_port}",
         f"PY={sys.executable}"],
        cwd=ROOT, env=local_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0,
    )
    children: dict[int, str] = {}
    try:
        children = children_running(process, "moto.server", "aisix.local.mock_upstream")
        store = Store(make_client(f"http://127.0.0.1:{ddb_port}", "us-east-1"), "aisix-keys", "aisix-counters")
        deadline = time.monotonic() + 60
        while True:  # the demo key is written last
            try:
                demo = store.get_key(hash_key("my-secret-key"))
            except StoreUnavailable:
                demo = None
            if demo is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert demo is not None and demo.models == frozenset({"my-gpt4-mini"}) and demo.enabled
        assert {"aisix-keys", "aisix-counters"} <= set(store.client.list_tables()["TableNames"])
        assert listening_addresses(ddb_port) == {"0.0.0.0"}
        assert listening_addresses(upstream_port) == {"0.0.0.0"}
        answer = httpx.post(f"http://127.0.0.1:{upstream_port}/v1/chat/completions", timeout=10,
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal that ran make
        output, _ = process.communicate(timeout=30)
        assert "Traceback" not in output, output
        assert '"AISIX_DYNAMODB_ENDPOINT": "http://host.docker.internal:' in output, "it prints what env.json needs"
        assert_all_gone(children)
    finally:
        for pid in [process.pid, *children]:
            if _stat(pid) is not None:
                os.kill(pid, signal.SIGKILL)


def test_env_json_sets_only_variables_the_template_declares():
    """SAM drops --env-vars entries the template does not declare: each would silently do nothing."""
    from cfnlint.decode import decode

    template, errors = decode(str(ROOT / "template.yaml"))
    assert not errors
    declared = template["Resources"]["GatewayFunction"]["Properties"]["Environment"]["Variables"]
    (function, variables), = json.loads((ROOT / "env.json").read_text()).items()
    assert function == "GatewayFunction"
    assert sorted(set(variables) - set(declared)) == []
