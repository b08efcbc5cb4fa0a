"""`make agents`: Claude Code and Codex CLI, installed from npm, through an AISIX gateway to every provider.

    python tools/agents.py              # install both CLIs into .agents/, then, for the local server
                                        # and the Lambda streaming path (`make run` / `make lambda-local`,
                                        # started here on free ports): each CLI, each model, a prompt and
                                        # a tool round trip; exit 1 if any fails
    python tools/agents.py check --url http://localhost:3000 [--key my-secret-key] [--models a,b]
                                        # the same against a gateway you run yourself
    python tools/agents.py record tests/fixtures/agents
                                        # the requests the CLIs send, captured through a recording proxy
                                        # (keys and device ids removed): the fixtures tests replay

A tool round trip: the prompt carries a ``#mock tool=... args=...`` directive (see aisix/local/mocks), so
the local mock upstream answers with a call to the CLI's own shell tool (Claude Code's ``Bash``, Codex's
``exec_command``) running ``echo <marker>``; the CLI runs it and sends its output back; the mock answers
by quoting the output, and the CLI prints that. The check is that the marker comes back in the final answer.

Against real providers (a gateway of yours with real keys), `check` works as well: the directive is then
only text in a prompt, the model decides what to do with it, and the checks may fail where the model
does not call the tool. README: "Claude Code and Codex" has the settings each CLI needs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from aisix.local.ports import free_port  # noqa: E402

AGENTS = ROOT / ".agents"
# The versions the fixtures in tests/fixtures/agents were recorded with; newer ones are expected to work.
CLAUDE_CODE = os.environ.get("AGENTS_CLAUDE_CODE", "@anthropic-ai/claude-code@2.1.197")
CODEX = os.environ.get("AGENTS_CODEX", "@openai/codex@0.171.0")
MODELS = ("my-claude", "my-gpt4-mini", "my-azure", "my-nova", "my-gemini")  # aisix/local/models.local.yaml
DEMO_KEY = "my-secret-key"
RUN_SECONDS = 180


# -- installing -----------------------------------------------------------------------------------

def install() -> None:
    """Both CLIs into .agents/node_modules (the npm registry; each ships its native binary as a package)."""
    if all((AGENTS / "node_modules" / ".bin" / name).exists() for name in ("claude", "codex")):
        return
    AGENTS.mkdir(exist_ok=True)
    print(f"installing {CLAUDE_CODE} and {CODEX} into {AGENTS.relative_to(ROOT)}/ ...", flush=True)
    subprocess.run(["npm", "install", "--prefix", str(AGENTS), "--no-audit", "--no-fund", "--loglevel=error",
                    CLAUDE_CODE, CODEX], check=True)


def binary(name: str) -> str:
    return str(AGENTS / "node_modules" / ".bin" / name)


# -- the two CLIs -----------------------------------------------------------------------------------

def claude_env(url: str, key: str, model: str) -> dict[str, str]:
    """What Claude Code needs to use the gateway (README: "Claude Code and Codex")."""
    return {
        "ANTHROPIC_BASE_URL": url,               # Claude Code appends /v1/messages
        "ANTHROPIC_API_KEY": key,                # sent as x-api-key (ANTHROPIC_AUTH_TOKEN: as a Bearer token)
        "ANTHROPIC_MODEL": model,                # a gateway alias
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,  # its small/fast calls too, else it asks for a Claude name
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, update checks or error reports
    }


def codex_config(url: str, model: str) -> str:
    """Codex's config.toml: a custom provider speaking the Responses API to the gateway."""
    return (f'model = "{model}"\nmodel_provider = "aisix"\n\n[model_providers.aisix]\nname = "AISIX"\n'
            f'base_url = "{url}/v1"\nenv_key = "AISIX_API_KEY"\nwire_api = "responses"\n')


def directive(tool: str, arguments: dict[str, Any]) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(arguments).encode()).decode().rstrip("=")
    return f"#mock tool={tool} args={encoded}"


@dataclass
class Outcome:
    cli: str
    model: str
    task: str
    ok: bool
    detail: str


def run_claude(url: str, key: str, model: str, home: Path, workdir: Path, tool: bool) -> Outcome:
    marker = f"aisix-agent-{secrets.token_hex(4)}"
    if tool:
        prompt = "Run the marker command. " + directive("Bash", {"command": f"echo {marker}",
                                                                  "description": "Print the marker"})
        expect = f"Tool result: {marker}"
    else:
        prompt, expect = "Say hello.", "Once upon a time"
    env = {**os.environ, **claude_env(url, key, model), "HOME": str(home)}
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    command = [binary("claude"), "-p", prompt, "--model", model, "--allowedTools", "Bash(echo:*)"]
    return _outcome("claude", model, "tool round trip" if tool else "prompt", command, env, workdir, expect)


def run_codex(url: str, key: str, model: str, home: Path, workdir: Path, tool: bool) -> Outcome:
    marker = f"aisix-agent-{secrets.token_hex(4)}"
    if tool:
        prompt = "Run the marker command. " + directive("exec_command", {"cmd": f"echo {marker}"})
        expect = marker  # Codex hands back the command's output with its own framing around it
    else:
        prompt, expect = "Say hello.", "Once upon a time"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(url, model))
    env = {**os.environ, "HOME": str(home), "CODEX_HOME": str(codex_home), "AISIX_API_KEY": key}
    command = [binary("codex"), "exec", "--skip-git-repo-check", "-m", model, prompt]
    outcome = _outcome("codex", model, "tool round trip" if tool else "prompt", command, env, workdir, expect)
    if outcome.ok and tool and f"Tool result:" not in outcome.detail:
        outcome.ok, outcome.detail = False, "the command ran but the answer did not quote its output"
    return outcome


def _outcome(cli: str, model: str, task: str, command: list[str], env: dict[str, str], workdir: Path,
             expect: str) -> Outcome:
    try:
        done = subprocess.run(command, env=env, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        return Outcome(cli, model, task, False, f"no answer in {RUN_SECONDS} s")
    output = done.stdout + done.stderr
    if done.returncode == 0 and expect in output:
        answer = next((line for line in done.stdout.splitlines() if expect in line), expect)
        return Outcome(cli, model, task, True, answer.strip()[:120])
    tail = " | ".join(line for line in output.strip().splitlines()[-4:])
    return Outcome(cli, model, task, False, f"exit {done.returncode}: {tail[:400]}")


def check(url: str, key: str, models: list[str]) -> list[Outcome]:
    """Each CLI, each model: a prompt, then a tool round trip. Prints each outcome as it comes."""
    home = AGENTS / "home"
    workdir = AGENTS / "workdir"
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for model in models:
        for run in (run_claude, run_codex):
            for tool in (False, True):
                outcome = run(url, key, model, home, workdir, tool)
                outcomes.append(outcome)
                mark = "ok  " if outcome.ok else "FAIL"
                print(f"  {mark} {outcome.cli:<6} {outcome.model:<13} {outcome.task:<16} {outcome.detail}",
                      flush=True)
    return outcomes


# -- a gateway of our own ---------------------------------------------------------------------------


class Gateway:
    """`make run` (or `make lambda-local` with ``lambda_path``) on a free port, stopped on exit."""

    def __init__(self, lambda_path: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "aisix", "serve", "--local", "--port", str(self.port)]
        if lambda_path:
            command.insert(4, "--lambda")
        self.log = open(AGENTS / f"gateway-{'lambda' if lambda_path else 'local'}.log", "w")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def __enter__(self) -> "Gateway":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the gateway stopped at start; see {self.log.name}")
            try:
                request = urllib.request.Request(self.url + "/v1/models",
                                                 headers={"Authorization": f"Bearer {DEMO_KEY}"})
                with urllib.request.urlopen(request, timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)  # waiting for a process to start listening: nothing to wait on but time
        raise SystemExit(f"the gateway did not answer within 120 s; see {self.log.name}")

    def __exit__(self, *_: Any) -> None:
        self.process.send_signal(signal.SIGTERM)  # stops moto and the mocks with it
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


# -- recording fixtures -----------------------------------------------------------------------------

class Recorder:
    """A proxy in front of the gateway that keeps each request the CLIs send, without secrets."""

    def __init__(self, target: str, out: Path, workdir: Path) -> None:
        self.target, self.out, self.workdir = target, out, workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = "request"
        self.count = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        import httpx

        from aisix.local.mocks import read_body

        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
        query = scope["query_string"].decode()
        if scope["method"] == "POST":
            self._keep(scope["path"], query, headers, body)
        forwarded = [(k, v) for k, v in headers if k not in ("host", "content-length")]
        async with httpx.AsyncClient(timeout=120) as client:
            request = client.build_request(scope["method"], self.target + scope["path"] + (f"?{query}" if query else ""),
                                           headers=forwarded, content=body)
            response = await client.send(request, stream=True)
            await send({"type": "http.response.start", "status": response.status_code, "headers": [
                (k.encode(), v.encode()) for k, v in response.headers.items()
                if k not in ("content-length", "transfer-encoding", "content-encoding")]})
            async for chunk in response.aiter_bytes():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    def _keep(self, path: str, query: str, headers: list[tuple[str, str]], body: bytes) -> None:
        text = body.decode().replace(str(self.workdir), "/home/user/project")
        kept = {k: ("<gateway key>" if k in ("x-api-key", "authorization") else v)
                for k, v in headers if k not in ("host", "content-length", "connection")}
        if "authorization" in kept:
            kept["authorization"] = "Bearer <gateway key>"
        record = {"method": "POST", "path": path, "query": query, "headers": kept, "body": scrub(json.loads(text))}
        self.count += 1
        name = self.name if self.count == 1 else f"{self.name}-{self.count}"
        (self.out / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")

    def serve(self) -> None:
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning",
                                               lifespan="off"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)


def scrub(value: Any) -> Any:
    """Device and installation ids out of a recorded body (the only identifying values the CLIs send)."""
    if isinstance(value, dict):
        return {k: ("0" * 64 if k == "device_id" else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str) and value.startswith("{") and "device_id" in value:
        return json.dumps(scrub(json.loads(value)), separators=(",", ":"))
    return value


def record(out: Path) -> None:
    """Each CLI's prompt and tool round trip through a pass-through model, captured as fixtures."""
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))  # the recorder reads bodies with aisix's mock helpers
    home, workdir = AGENTS / "home", AGENTS / "workdir"
    workdir.mkdir(parents=True, exist_ok=True)
    with Gateway(lambda_path=False) as gateway:
        recorder = Recorder(gateway.url, out, workdir)
        recorder.serve()
        for name, run, model, tool in (("claude-code-prompt", run_claude, "my-claude", False),
                                       ("claude-code-tool", run_claude, "my-claude", True),
                                       ("codex-prompt", run_codex, "my-gpt4-mini", False),
                                       ("codex-tool", run_codex, "my-gpt4-mini", True)):
            recorder.name, recorder.count = name, 0
            outcome = run(recorder.url, DEMO_KEY, model, home, workdir, tool)
            print(f"  {'ok  ' if outcome.ok else 'FAIL'} {name}: {recorder.count} request(s) {outcome.detail}")
    for path in out.glob("*.json"):  # installation ids ride in a header; this machine's paths everywhere
        path.write_text(_scrub_installation(path.read_text()).replace(str(ROOT), "/home/user/aisix"))


def _scrub_installation(text: str) -> str:
    import re

    return re.sub(r'(installation_id\\?":\\?")[0-9a-f-]{36}', r"\g<1>00000000-0000-0000-0000-000000000000", text)


# -- main -------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    checking = sub.add_parser("check", help="run both CLIs through a running gateway")
    checking.add_argument("--url", default="http://localhost:3000")
    checking.add_argument("--key", default=DEMO_KEY)
    checking.add_argument("--models", default=",".join(MODELS))
    recording = sub.add_parser("record", help="capture the CLIs' requests as test fixtures")
    recording.add_argument("out", type=Path)
    sub.add_parser("install", help="install both CLIs into .agents/")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C: the gateway started here (and its moto and mocks) stops with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    install()
    if args.command == "install":
        return 0
    if args.command == "record":
        record(args.out)
        return 0
    if args.command == "check":
        outcomes = check(args.url.rstrip("/"), args.key, args.models.split(","))
    else:
        outcomes = []
        for lambda_path in (False, True):
            print(f"{'Lambda streaming path (make lambda-local)' if lambda_path else 'local server (make run)'}:",
                  flush=True)
            with Gateway(lambda_path) as gateway:
                outcomes += check(gateway.url, DEMO_KEY, list(MODELS))
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
