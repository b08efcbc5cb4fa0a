"""``make run``: the gateway on http://localhost:3000 with no AWS account and no Docker.

With ``--local`` it starts, as child processes, moto's DynamoDB server and
(unless ``OPENAI_API_KEY`` is set) the mock upstream; creates the tables;
creates the demo key ``my-secret-key``; and serves the gateway with uvicorn.
Without ``--local`` it only serves the gateway, configured from the
environment like a deployment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack

DEMO_KEY = "my-secret-key"
DEMO_MODEL = "my-gpt4-mini"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def start_child(stack: ExitStack, args: list[str], url: str, what: str, quiet: bool = False) -> None:
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen([sys.executable, *args], stdout=output, stderr=output)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    wait_for(url, process, what)


def prepare_local(stack: ExitStack) -> None:
    """Start moto and the mock upstream, point the environment at them, seed the demo key."""
    env = os.environ
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_REGION", env.get("AWS_REGION", "us-east-1")),
    ):
        env[name] = value
    moto_port = free_port()
    start_child(stack, ["-m", "moto.server", "-p", str(moto_port)], f"http://127.0.0.1:{moto_port}/moto-api/", "moto", quiet=True)
    env["AISIX_DYNAMODB_ENDPOINT"] = f"http://127.0.0.1:{moto_port}"
    print(f"DynamoDB: moto server on http://127.0.0.1:{moto_port} (in memory; gone when you stop)")

    if env.get("OPENAI_API_KEY"):
        print(f"Upstream: OpenAI (OPENAI_API_KEY is set); '{DEMO_MODEL}' calls the real API")
    else:
        mock_port = free_port()
        start_child(
            stack,
            ["-m", "aisix.local.mock_upstream", "--port", str(mock_port), "--delay", "0.04", "--words", "120"],
            f"http://127.0.0.1:{mock_port}/_mock/requests",
            "mock upstream",
        )
        env.setdefault("AISIX_OPENAI_BASE_URL", f"http://127.0.0.1:{mock_port}/v1")
        print("Upstream: MOCK (OPENAI_API_KEY is not set). Answers are canned text streamed at")
        print(f"          a model-like pace from http://127.0.0.1:{mock_port}/v1 - not a real model.")

    from ..auth import hash_key, issue_key
    from ..config import Settings
    from ..store import Store, make_client

    settings = Settings.from_env()
    store = Store(make_client(
        settings.dynamodb_endpoint, settings.region,
        timeout=settings.dynamodb_timeout_seconds, attempts=settings.dynamodb_max_attempts,
    ), settings.keys_table, settings.counters_table)
    store.create_tables()
    if store.get_key(hash_key(DEMO_KEY)) is None:
        issue_key(store, "local demo", frozenset({DEMO_MODEL}), rpm=60, tpm=100_000, secret=DEMO_KEY)


def serve_lambda(local: bool, port: int) -> int:
    """The Lambda streaming path behind a local function URL, with the embedded default."""
    from .lambda_emulator import main as emulator

    with ExitStack() as stack:
        if local:
            prepare_local(stack)
            os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "aisix-local")
            print(f"\nLambda function URL emulation on http://localhost:{port} (demo key: {DEMO_KEY})\n")
        return emulator(["--port", str(port), "--app", "handler:app"])


def serve(local: bool, host: str, port: int) -> int:
    import uvicorn

    with ExitStack() as stack:
        if local:
            prepare_local(stack)
        from ..app import create_app

        app = create_app()
        print(f"\nAISIX gateway on http://localhost:{port}")
        if local:
            print(f"Demo key (local mode only): {DEMO_KEY}  (may use '{DEMO_MODEL}', 60 RPM, 100k TPM)\n")
            print(f"  curl -N http://localhost:{port}/v1/chat/completions \\")
            print(f'    -H "Authorization: Bearer {DEMO_KEY}" -H "Content-Type: application/json" \\')
            print(f"    -d '{{\"model\": \"{DEMO_MODEL}\", \"messages\": [{{\"role\": \"user\", "
                  f"\"content\": \"Tell me a story\"}}], \"stream\": true}}'\n")
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    return 0
