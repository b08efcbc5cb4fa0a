"""``make run``: the gateway on http://localhost:3000 with no AWS account and no Docker.

With ``--local`` it starts, as child processes, moto's DynamoDB server, the
OpenAI-compatible mock upstream (unless ``OPENAI_API_KEY`` is set) and the
mocks of Anthropic, Gemini, Azure OpenAI and Bedrock (aisix/local/mocks/);
serves the models of aisix/local/models.local.yaml (one alias per provider,
unless ``AISIX_CONFIG`` names another file); creates the tables and the demo
key ``my-secret-key``, which may use every one of those aliases; and serves
the gateway with uvicorn. Without ``--local`` it only serves the gateway,
configured from the environment like a deployment.

``make sam-local-deps`` (`serve_deps`) starts only moto and the mock upstream,
on fixed ports and an address a container can reach, for ``sam local start-api``.

Whatever ends the process (Ctrl-C, SIGTERM, SIGHUP, a failed start), every
child it started is stopped: see `StopOnSignals`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .ports import free_port

DEMO_KEY = "my-secret-key"
# The demo key's limits: room for a coding agent (Claude Code resends ~20k tokens of context each turn,
# Codex ~10k; `make agents` runs both through every alias), low enough to see a 429 on purpose.
DEMO_RPM = 600
DEMO_TPM = 2_000_000
DEMO_MODEL = "my-gpt4-mini"
# The mock ignores credentials; a value keeps the config check ("api_key_env names an
# unset variable") for the real upstreams it exists for.
MOCK_UPSTREAM_KEY = "unused-by-the-mock-upstream"
# Local mode's models: one alias per provider, each on its mock (AISIX_CONFIG, if set, wins).
LOCAL_MODELS_FILE = Path(__file__).with_name("models.local.yaml")
# Local mode's AWS credentials (moto takes any; the Bedrock mock checks SigV4 signatures made with them).
LOCAL_AWS_KEY = "local"


@dataclass(frozen=True)
class ProviderMock:
    """A provider's loopback mock, as local mode serves it: where the models file finds it, how it starts."""

    name: str  # as the log says it
    module: str  # ``python -m`` this, with --host and --port
    url_env: str  # the base URL, for models.local.yaml
    args: tuple[str, ...] = ()


PROVIDER_MOCKS = (
    ProviderMock("Anthropic", "aisix.local.mocks.anthropic", "AISIX_LOCAL_ANTHROPIC_URL"),
    ProviderMock("Gemini", "aisix.local.mocks.gemini", "AISIX_LOCAL_GEMINI_URL"),
    ProviderMock("Azure OpenAI", "aisix.local.mocks.azure", "AISIX_LOCAL_AZURE_URL"),
    ProviderMock("Bedrock", "aisix.local.mocks.bedrock", "AISIX_LOCAL_BEDROCK_URL", ("--secret-key", LOCAL_AWS_KEY)),
)
MOCK_PACE = ("--delay", "0.04", "--words", "120")  # a model-like pace for streamed answers

# `make sam-local-deps`: fixed ports, so the checked-in env.json can name them.
SAM_DEPS_DYNAMODB_PORT = 3005
SAM_DEPS_UPSTREAM_PORT = 3006
SAM_FUNCTION = "GatewayFunction"  # the function's logical id in template.yaml


class StopOnSignals:
    """Turn SIGINT, SIGTERM and SIGHUP into ``SystemExit``, so ``with`` blocks unwind and stop the children.

    Without it SIGTERM's default action kills the process on the spot and the
    children outlive it. uvicorn (and the Lambda emulator) install their own
    handlers while they serve and shut down gracefully; uvicorn then restores
    these handlers and raises the signal again, which lands here, after the
    gateway's own shutdown (pending token charges written while moto still runs).

    The first signal exits; later ones are ignored, since stopping the children
    is bounded (`stop_child`). Inside `shielded()` a signal waits until the
    block ends, so a child is never started without its stop being registered.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self._shield = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        if self._shield:
            self._pending = signum
            return
        self._exit(signum)

    def _exit(self, signum: int) -> None:
        self.received = signum
        raise SystemExit(128 + signum)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
            if not self._shield and self._pending is not None and self.received is None:
                self._exit(self._pending)


@contextmanager
def stop_on_signals() -> Iterator[StopOnSignals]:
    signals = StopOnSignals()
    signals.install()
    try:
        yield signals
    finally:
        signals.restore()



def wait_for(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited early (code {process.returncode})")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error is an answer: it is up
                return
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {timeout:.0f}s ({url})")


def stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spawn_child(
    stack: ExitStack, signals: StopOnSignals, args: list[str], quiet: bool = False, quiet_stdout: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``python args...``; it is stopped when ``stack`` closes.

    The child gets its own process group: Ctrl-C in a terminal signals the whole
    foreground group, and moto must outlive the gateway's shutdown (which writes
    pending token charges to it); this process stops it afterwards.
    """
    stdout = subprocess.DEVNULL if quiet or quiet_stdout else None
    stderr = subprocess.DEVNULL if quiet else None
    with signals.shielded():
        process = subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=stderr, process_group=0)
        stack.callback(stop_child, process)
    return process


def start_child(
    stack: ExitStack, signals: StopOnSignals, args: list[str], url: str, what: str, quiet: bool = False
) -> subprocess.Popen[bytes]:
    """`spawn_child`, then wait until ``url`` answers."""
    process = spawn_child(stack, signals, args, quiet)
    wait_for(url, process, what)
    return process


def _client_host(host: str) -> str:
    """Where this process reaches a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@dataclass
class LocalStack:
    dynamodb_endpoint: str
    upstream_url: str | None  # the mock's /v1 address, when one was started
    children: list[subprocess.Popen[bytes]]
    provider_urls: dict[str, str] = field(default_factory=dict)  # provider mock name -> base URL
    demo_models: frozenset[str] = frozenset({DEMO_MODEL})  # what the demo key may use


def prepare_local(
    stack: ExitStack,
    signals: StopOnSignals,
    *,
    host: str = "127.0.0.1",
    dynamodb_port: int | None = None,
    upstream_port: int | None = None,
    mock: bool | None = None,
    every_provider: bool = True,
) -> LocalStack:
    """Start moto and the mock upstream, point the environment at them, seed the demo key.

    ``mock=None`` starts the mock unless ``OPENAI_API_KEY`` is set. ``every_provider``
    also starts the other providers' mocks and serves models.local.yaml.
    """
    env = os.environ
    for name, value in (
        ("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY),
        ("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY),
        ("AWS_REGION", env.get("AWS_REGION", "us-east-1")),
    ):
        env[name] = value
    env.pop("AWS_SESSION_TOKEN", None)
    children = []
    moto_port = dynamodb_port or free_port()
    reach = _client_host(host)
    children.append(start_child(
        stack, signals, ["-m", "moto.server", "-H", host, "-p", str(moto_port)],
        f"http://{reach}:{moto_port}/moto-api/", "moto", quiet=True,
    ))
    endpoint = f"http://{reach}:{moto_port}"
    env["AISIX_DYNAMODB_ENDPOINT"] = endpoint
    print(f"DynamoDB: moto server on http://{host}:{moto_port} (in memory; gone when you stop)")

    upstream_url = None
    if mock is False or (mock is None and env.get("OPENAI_API_KEY")):
        print(f"Upstream: OpenAI (OPENAI_API_KEY is set); '{DEMO_MODEL}' calls the real API")
    else:
        mock_port = upstream_port or free_port()
        children.append(start_child(
            stack, signals,
            ["-m", "aisix.local.mock_upstream", "--host", host, "--port", str(mock_port),
             "--delay", "0.04", "--words", "120"],
            f"http://{reach}:{mock_port}/_mock/requests",
            "mock upstream",
        ))
        upstream_url = f"http://{reach}:{mock_port}/v1"
        if "AISIX_OPENAI_BASE_URL" not in env:
            env["AISIX_OPENAI_BASE_URL"] = upstream_url
            if not env.get("OPENAI_API_KEY"):
                env["OPENAI_API_KEY"] = MOCK_UPSTREAM_KEY
        why = " (OPENAI_API_KEY is not set)" if mock is None else ""
        print(f"Upstream: MOCK{why}. Answers are canned text streamed at")
        print(f"          a model-like pace from http://{host}:{mock_port}/v1 - not a real model.")

    provider_urls = {}
    demo_models = frozenset({DEMO_MODEL})
    if every_provider:
        provider_urls = start_provider_mocks(stack, signals, host, children)
        env.setdefault("AISIX_CONFIG", str(LOCAL_MODELS_FILE))
        from ..config import model_names

        demo_models = model_names(LOCAL_MODELS_FILE, env)

    from ..auth import hash_key, issue_key
    from ..config import Settings
    from ..store import Store, make_client

    settings = Settings.from_env()
    # Setting up is not serving: moto's first table creation can take seconds on a busy
    # machine, so this client waits longer than the gateway's own (1 s) would.
    store = Store(make_client(settings.dynamodb_endpoint, settings.region, timeout=30, attempts=3),
                  settings.keys_table, settings.counters_table)
    store.create_tables()
    if store.get_key(hash_key(DEMO_KEY)) is None:
        issue_key(store, "local demo", demo_models, rpm=DEMO_RPM, tpm=DEMO_TPM, secret=DEMO_KEY)
    return LocalStack(endpoint, upstream_url, children, provider_urls, demo_models)


def demo_banner(port: int, models: frozenset[str]) -> str:
    """What a new user needs: the demo key, its models, and one call per endpoint to copy."""
    import yaml

    url = f"http://localhost:{port}"
    entries = yaml.safe_load(LOCAL_MODELS_FILE.read_text())["models"]
    providers = {entry["name"]: entry.get("provider", "openai") for entry in entries}
    ordered = [name for name in providers if name in models] + sorted(models - set(providers))
    names = ", ".join(f"{name} ({providers[name]})" if name in providers else name for name in ordered)
    lines = [
        f"Demo key (local mode only): {DEMO_KEY}  ({DEMO_RPM} RPM, {DEMO_TPM // 1_000_000}M TPM) may use: {names}",
        "",
        f"  curl -N {url}/v1/chat/completions \\",
        f'    -H "Authorization: Bearer {DEMO_KEY}" -H "Content-Type: application/json" \\',
        f"    -d '{{\"model\": \"{DEMO_MODEL}\", \"messages\": [{{\"role\": \"user\", "
        f"\"content\": \"Tell me a story\"}}], \"stream\": true}}'",
    ]
    if "my-claude" in models:
        lines += [
            "",
            f"  curl -N {url}/v1/messages -H \"x-api-key: {DEMO_KEY}\" -H \"anthropic-version: 2023-06-01\" \\",
            "    -H \"Content-Type: application/json\" -d '{\"model\": \"my-claude\", \"max_tokens\": 256, "
            "\"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'",
        ]
    if "my-embeddings" in models:
        lines += [
            "",
            f"  curl {url}/v1/embeddings -H \"Authorization: Bearer {DEMO_KEY}\" "
            "-H \"Content-Type: application/json\" \\",
            "    -d '{\"model\": \"my-embeddings\", \"input\": \"a brave little gateway\"}'",
        ]
    lines += [
        "",
        "Every model serves /v1/chat/completions, /v1/responses, /v1/messages and /v1/messages/count_tokens;",
        "/v1/embeddings takes my-embeddings. The README lists every endpoint and provider.",
    ]
    return "\n".join(lines)


def start_provider_mocks(
    stack: ExitStack, signals: StopOnSignals, host: str, children: list[subprocess.Popen[bytes]]
) -> dict[str, str]:
    """Start every `PROVIDER_MOCKS` entry at once, then wait for each; set the addresses models.local.yaml reads."""
    reach = _client_host(host)
    started = []
    for mock in PROVIDER_MOCKS:
        port = free_port()
        process = spawn_child(stack, signals, ["-m", mock.module, "--host", host, "--port", str(port), *MOCK_PACE,
                                               *mock.args], quiet_stdout=True)  # fmt: skip
        children.append(process)
        started.append((mock, process, f"http://{reach}:{port}"))
    urls = {}
    for mock, process, url in started:
        wait_for(url + "/", process, f"{mock.name} mock")
        os.environ[mock.url_env] = urls[mock.name] = url
    os.environ.setdefault("AISIX_LOCAL_MOCK_KEY", MOCK_UPSTREAM_KEY)
    print(f"Upstreams: MOCKS of {', '.join(urls)} (aisix/local/mocks/) on loopback ports "
          f"{', '.join(url.rsplit(':', 1)[1] for url in urls.values())} - canned answers, not real models.")
    return urls


def check_config() -> None:
    """Load the models file once here, so a mistake is one line now (`ConfigError`), not a crash later.

    An upstream key that the runtime reads from Secrets Manager (``NAME_SECRET_ARN``)
    is not here yet: such a key is not required in this check.
    """
    from ..config import Settings, load_config
    from ..secrets import SUFFIX

    config = load_config(Settings.from_env().config_path, require_keys=False)
    for model in config.models.values():
        name = model.api_key_env
        if name and not model.api_key and not os.environ.get(name + SUFFIX):
            load_config(Settings.from_env().config_path)  # raises, with the one-line message


def serve_lambda(local: bool, port: int) -> int:
    """The Lambda streaming path behind a local function URL, with the embedded default."""
    from .lambda_emulator import main as emulator

    with stop_on_signals() as signals, ExitStack() as stack:
        if local:
            stack_info = prepare_local(stack, signals)
            os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "aisix-local")
        check_config()  # the runtime process would only crash, and be restarted, every second
        if local:
            print(f"\nLambda function URL emulation on http://localhost:{port}")
            print(demo_banner(port, stack_info.demo_models) + "\n", flush=True)
        try:
            return emulator(["--port", str(port), "--app", "handler:app"])
        finally:
            # asyncio resets SIGINT/SIGTERM to their defaults when the emulator's loop closes:
            # take them back, so a second signal cannot cut the children's cleanup short.
            signals.install()


def serve(local: bool, host: str, port: int) -> int:
    import uvicorn

    with stop_on_signals() as signals, ExitStack() as stack:
        demo_models = prepare_local(stack, signals).demo_models if local else frozenset()
        from ..app import create_app

        app = create_app()
        print(f"\nAISIX gateway on http://localhost:{port}")
        if local:
            print(demo_banner(port, demo_models) + "\n")
            print("Stop with Ctrl-C (or SIGTERM): moto and the mock upstreams stop with it.\n")
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    return 0


def sam_env(
    dynamodb_port: int = SAM_DEPS_DYNAMODB_PORT,
    upstream_port: int = SAM_DEPS_UPSTREAM_PORT,
    host: str = "host.docker.internal",
) -> dict[str, dict[str, str]]:
    """The ``--env-vars`` file for ``sam local start-api`` against `serve_deps` (env.json)."""
    from ..config import Settings

    defaults = Settings()
    return {SAM_FUNCTION: {
        "AISIX_DYNAMODB_ENDPOINT": f"http://{host}:{dynamodb_port}",
        "AISIX_KEYS_TABLE": defaults.keys_table,  # the template's are CloudFormation's names
        "AISIX_COUNTERS_TABLE": defaults.counters_table,
        "AISIX_OPENAI_BASE_URL": f"http://{host}:{upstream_port}/v1",
        "OPENAI_API_KEY": MOCK_UPSTREAM_KEY,
        "OPENAI_API_KEY_SECRET_ARN": "",  # no Secrets Manager call from the container
    }}


def serve_deps(host: str, dynamodb_port: int, upstream_port: int) -> int:
    """moto and the mock upstream on fixed ports, tables and demo key made, until a signal."""
    with stop_on_signals() as signals, ExitStack() as stack:
        local = prepare_local(
            stack, signals, host=host, dynamodb_port=dynamodb_port, upstream_port=upstream_port, mock=True,
            every_provider=False,  # env.json and the Lambda package serve models.yaml: my-gpt4-mini
        )
        region = os.environ["AWS_REGION"]
        print(f"\nTables and the demo key '{DEMO_KEY}' (model '{DEMO_MODEL}') are in moto, region {region}.")
        print("For `sam local start-api --env-vars <file>` (env.json is this, for the default ports):\n")
        print(json.dumps(sam_env(dynamodb_port, upstream_port), indent=2))
        print(f"\nThen: sam build && sam local start-api --env-vars env.json --region {region}")
        print("  (Linux: add --add-host host.docker.internal:host-gateway)")
        print("\nReady. Stop with Ctrl-C (or SIGTERM).", flush=True)
        while all(child.poll() is None for child in local.children):
            time.sleep(0.5)
        gone = next(child for child in local.children if child.poll() is not None)
        raise SystemExit(f"{gone.args[2]} exited (code {gone.returncode}); stopping")
    return 0
