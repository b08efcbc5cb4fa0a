"""The Lambda package (tools/lambda_package.py, what `sam build` ships): lean, and never compiled at run time.

The package is built here for the interpreter running the tests, copying the
dependencies from its environment (``--deps current``): the same versions the
suite runs against, no network, a few seconds. `make package` builds the real
one (PyPI wheels for arm64, bytecode by Python 3.13) with the same code.

Importing and calling the handler from the package runs in a subprocess with
``-I -S`` (no site-packages, no user site, no current directory on ``sys.path``)
and the package prepended, as on Lambda, where /var/task is read-only: a spy on
``SourceLoader.source_to_code`` (the one place CPython compiles a module's
source) lists every module compiled from source, and the package's files are
compared before and after (no ``.pyc`` written). As root, a read-only directory
would not stop a write, so the spy and the file list are the check.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from aisix.auth import issue_key

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "tools" / "lambda_package.py"
SAM_EVENT = Path(__file__).resolve().parent / "sam_events" / "start-api-http-api.json"
MAX_ZIPPED = 12 * 1024 * 1024

MUST_HAVE = [
    "handler.py", "models.yaml", "aisix/app.py", "aisix/store.py", "aisix/secrets.py",
    "aisix/lambda_runtime/__main__.py", "aisix/lambda_runtime/loop.py",
    "starlette/applications.py", "mangum/adapter.py", "httpx/_client.py", "httpcore/__init__.py",
    "h11/__init__.py", "anyio/__init__.py", "sniffio/__init__.py", "idna/core.py", "certifi/cacert.pem",
    "botocore/session.py", "yaml/__init__.py", "dateutil/parser/__init__.py", "jmespath/__init__.py",
    "urllib3/__init__.py",
    # what botocore reads to create any client, and the two services the gateway calls
    "botocore/data/endpoints.json", "botocore/data/partitions.json",
    "botocore/data/sdk-default-configuration.json", "botocore/data/_retry.json",
    "botocore/data/dynamodb", "botocore/data/secretsmanager",
]
# Top-level names that must not be shipped: dev and repo files, and what Lambda never imports.
MUST_NOT_HAVE = {
    "tests", "bench", "docs", "tools", "Makefile", "template.yaml", "README.md", ".git", ".venv",
    "aiohttp", "httpx_aiohttp", "multidict", "yarl", "frozenlist", "aiosignal", "propcache",
    "aiohappyeyeballs", "attrs", "boto3", "s3transfer", "moto", "uvicorn", "pytest", "openai", "bin",
}


def run_build(out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, str(BUILD), str(out), "--deps", "current", *extra],
                   check=True, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lambda") / "package"
    run_build(out, "--zip", str(out.with_suffix(".zip")))
    return out


def test_ships_what_lambda_imports_and_nothing_else(package: Path) -> None:
    missing = [p for p in MUST_HAVE if not (package / p).exists()]
    assert not missing, missing
    top = {p.name for p in package.iterdir()}
    assert not top & MUST_NOT_HAVE, top & MUST_NOT_HAVE
    assert not any(n.startswith(("aiohttp", "boto3", "s3transfer")) for n in top), sorted(top)

    # dev tooling inside the package tree: aisix/local, and the emulators wherever they sit
    assert not (package / "aisix" / "local").exists()
    assert not [p for p in package.rglob("*") if p.name in ("emulator.py", "function_url.py")]
    # botocore's data: the services the gateway calls, nothing else
    services = {p.name for p in (package / "botocore" / "data").iterdir() if p.is_dir()}
    assert services == {"dynamodb", "secretsmanager"}
    endpoints = json.loads((package / "botocore" / "data" / "endpoints.json").read_text())
    aws = next(p for p in endpoints["partitions"] if p["partition"] == "aws")
    assert set(aws["services"]) == {"dynamodb", "secretsmanager"} and "us-east-1" in aws["regions"]
    bootstrap = package / "aisix" / "lambda_runtime" / "bootstrap"
    assert os.access(bootstrap, os.X_OK), "AWS_LAMBDA_EXEC_WRAPPER must stay executable"


def test_zip_is_small_and_keeps_the_wrapper_executable(package: Path) -> None:
    archive = package.with_suffix(".zip")
    assert archive.stat().st_size <= MAX_ZIPPED, f"{archive.stat().st_size / 2**20:.1f} MiB zipped"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert {"handler.py", "models.yaml", "aisix/app.py"} <= names
        mode = z.getinfo("aisix/lambda_runtime/bootstrap").external_attr >> 16
    assert mode & 0o111, oct(mode)


def test_every_module_has_bytecode_that_is_never_checked_against_its_source(package: Path) -> None:
    """Unchecked hash-based .pyc (PEP 552: flags == 0b01): no stat of the source, no mtime to match."""
    sources = [p for p in package.rglob("*.py")]
    assert len(sources) > 300
    bad = []
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists():
            bad.append(f"{source.relative_to(package)}: no {cached.name}")
            continue
        header = cached.read_bytes()[:16]
        if header[:4] != importlib.util.MAGIC_NUMBER:
            bad.append(f"{source.relative_to(package)}: bytecode of another Python")
        elif int.from_bytes(header[4:8], "little") != 0b01:
            bad.append(f"{source.relative_to(package)}: flags {int.from_bytes(header[4:8], 'little'):#b}")
    assert not bad, bad[:20]


PROBE = r"""
import json, os, sys, sysconfig
package = sys.argv[1]
sys.path.insert(0, package)
import importlib._bootstrap_external as bootstrap
compiled = []
original = bootstrap.SourceLoader.source_to_code
def spy(self, data, path, *args, **kwargs):
    compiled.append(path)
    return original(self, data, path, *args, **kwargs)
bootstrap.SourceLoader.source_to_code = spy

import handler  # builds the app, as Lambda's init does
import importlib.util
if importlib.util.find_spec("uvloop") is not None:  # the runtime loop's event loop: its library still loads
    import uvloop
    uvloop.new_event_loop().close()

class Context:
    aws_request_id = "req-1"
    function_name = "aisix-test"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:aisix-test"
    def get_remaining_time_in_millis(self):
        return 30000

result = handler.handler(json.loads(sys.stdin.read()), Context())
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
elsewhere = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None) and not module.__file__.startswith((package, *stdlib))
)
print(json.dumps({
    "compiled": [p for p in compiled if p.startswith(package)],
    "elsewhere": elsewhere,
    "imported": sorted(sys.modules),
    "upstream_key": os.environ.get("OPENAI_API_KEY"),
    "status": result["statusCode"],
    "body": result["body"],
    "base64": result.get("isBase64Encoded", False),
}))
"""


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def probe(package: Path, env: dict[str, str], event: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(package)],
        input=json.dumps(event), env=env, cwd=str(package), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def lambda_env(package: Path, store: Any, upstream: Any, **extra: str) -> dict[str, str]:
    """What Lambda gives the function (minus its runtime API), pointed at moto and the mock upstream."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LAMBDA_TASK_ROOT": str(package),
        "AWS_LAMBDA_FUNCTION_NAME": "aisix-test",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",  # Lambda sets both; botocore reads this one
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AISIX_CONFIG": "models.yaml",  # relative to /var/task, as the template sets it
        "AISIX_KEYS_TABLE": store.keys_table,
        "AISIX_COUNTERS_TABLE": store.counters_table,
        "AISIX_DYNAMODB_ENDPOINT": store.client.meta.endpoint_url,
        "AISIX_OPENAI_BASE_URL": upstream.base_url,
        "AISIX_TOKEN_FLUSH_SECONDS": "0",
    }
    env.update(extra)
    return env


def test_the_handler_serves_from_the_package_and_compiles_nothing(package: Path, store: Any, upstream: Any) -> None:
    """Import handler.py and answer a chat call from the package alone: DynamoDB, Secrets Manager, upstream."""
    import botocore.session

    secretsmanager = botocore.session.get_session().create_client(
        "secretsmanager", region_name="us-east-1", endpoint_url=store.client.meta.endpoint_url
    )
    arn = secretsmanager.create_secret(Name=f"aisix-{store.keys_table}", SecretString="sk-from-secrets-manager")["ARN"]
    secret, _ = issue_key(store, "package", rpm=10)
    event = json.loads(SAM_EVENT.read_text())
    event["headers"]["Authorization"] = f"Bearer {secret}"
    env = lambda_env(package, store, upstream, OPENAI_API_KEY_SECRET_ARN=arn,
                     AWS_ENDPOINT_URL_SECRETS_MANAGER=store.client.meta.endpoint_url)

    before = snapshot(package)
    found = probe(package, env, event)
    assert snapshot(package) == before, "the import wrote files into the package"

    assert found["compiled"] == [], found["compiled"]
    assert found["elsewhere"] == [], found["elsewhere"]  # nothing from outside the package and the stdlib
    assert found["status"] == 200, found["body"]
    body = base64.b64decode(found["body"]).decode() if found["base64"] else found["body"]
    assert json.loads(body)["object"] == "chat.completion"
    assert found["upstream_key"] == "sk-from-secrets-manager"  # the secret was read at start
    imported = set(found["imported"])
    assert not {m for m in imported if m.split(".")[0] in {"boto3", "s3transfer", "aiohttp", "httpx_aiohttp"}}
    assert not {m for m in imported if m.startswith("aisix.local")}


def test_rebuild_refuses_to_clear_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    result = subprocess.run([sys.executable, str(BUILD), str(precious), "--deps", "current"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "refusing" in result.stderr
    assert (precious / "notes.txt").read_text() == "mine"
