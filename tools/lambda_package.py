"""Build the Lambda package: only what the function imports, with bytecode a read-only /var/task can use.

    python tools/lambda_package.py OUT [--zip FILE]                    # for Lambda: arm64, Python 3.13
    python tools/lambda_package.py OUT --deps current --platform ""   # for this interpreter (tests, bench)

`sam build` runs it through the Makefile (`BuildMethod: makefile`, target
`build-GatewayFunction`, OUT = SAM's ``ARTIFACTS_DIR``); `make package` runs it
by hand and also writes the zip. Standard library only: it runs inside SAM's
build container as well as on a laptop.

What goes in, and why:

* ``handler.py``, ``models.yaml`` and the ``aisix`` package, without ``aisix/local``
  (the embedded default, the runtime emulator and the function-URL emulation: dev
  tooling production never imports).
* The runtime dependencies of requirements.txt, minus ``LEFT_OUT``, with what they
  depend on: from PyPI wheels for Lambda's platform (``--deps pip``), or copied
  from the interpreter running this script (``--deps current``, same versions as
  the venv, no network: what the test and the benchmark build).
* Of botocore's data, only ``BOTOCORE_SERVICES`` and the files botocore reads when
  it creates any client (endpoints, partitions, defaults, retry rules), with
  endpoints.json cut to those services too. The rest is ~27 MB unzipped, two thirds
  of a naive package, for services the gateway never calls.
* Compiled extensions without their debug sections (``strip --strip-debug``).
* Bytecode for every module, compiled by the target's Python version with
  ``--invalidation-mode unchecked-hash``: Lambda's /var/task is read-only, so a
  missing or stale ``.pyc`` means compiling from source on every cold start
  (1.8-2.3 s of CPU for this package, against 0.8-1.0 s with bytecode), and
  unchecked hash-based ``.pyc`` files are used as they are, without a ``stat`` of
  the source or an mtime comparison (zip and deploy tools do not keep mtimes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The botocore service models the gateway calls: DynamoDB (keys, counters) and Secrets
# Manager (the upstream key, read once at start). Credentials on Lambda come from the
# environment (or, with SnapStart, the container credentials endpoint), neither of which
# needs a service model, so `sts` is not shipped. Add a service here when the gateway
# starts calling it (e.g. "bedrock-runtime").
BOTOCORE_SERVICES = ("dynamodb", "secretsmanager")

# In requirements.txt for the local server, never imported on Lambda:
# * aiohttp and yarl: on Lambda the upstream client is httpx over the lean
#   asyncio + h11 transport (AISIX_UPSTREAM_TRANSPORT defaults to lean there, see
#   aisix/config.py and aisix/providers/transport.py);
# * boto3 and s3transfer: the gateway uses botocore's client directly (aisix/store.py,
#   aisix/secrets.py); boto3 is for the key CLI, which runs on an operator's machine.
LEFT_OUT = frozenset({"aiohttp", "yarl", "boto3", "s3transfer"})

APP_FILES = ("handler.py", "models.yaml")
APP_PACKAGE = "aisix"
# Dev tooling inside the package tree: excluded wherever it sits.
DEV_DIRS = frozenset({"local", "__pycache__"})
DEV_FILES = frozenset({"emulator.py", "function_url.py"})

MARKER = ".aisix-lambda-package"  # lets a rebuild clear OUT without clearing something else
LAMBDA_ROOT = "/var/task"  # where the code sits on Lambda: the path tracebacks should show


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(requirements: Path) -> list[str]:
    """The pinned lines of requirements.txt that Lambda needs (`name==version`)."""
    wanted = []
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]
        if canonical(name) not in LEFT_OUT:
            wanted.append(line)
    return wanted


def prepare(out: Path) -> None:
    """An empty OUT: created, or cleared if a previous build made it (SAM hands over an empty one)."""
    if out.exists():
        entries = list(out.iterdir())
        if entries and not (out / MARKER).exists():
            raise SystemExit(f"{out} is not empty and was not made by this script; refusing to clear it")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def install_from_pip(out: Path, requirements: list[str], platform: str, python_version: str) -> None:
    """Wheels from the index for the target (Lambda: manylinux2014_aarch64, cp313), resolved by pip."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(requirements) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--target", str(out), "-r", f.name]
    if platform:
        command += ["--platform", platform, "--only-binary=:all:", "--implementation", "cp",
                    "--python-version", python_version]
    try:
        subprocess.run(command, check=True)
    finally:
        os.unlink(f.name)


def copy_from_current(out: Path, requirements: list[str]) -> None:
    """The same distributions, copied from this interpreter's environment (markers evaluated for it)."""
    import importlib.metadata as metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

    seen: set[str] = set()
    todo = [Requirement(line) for line in requirements]
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        if name in seen or name in LEFT_OUT:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        seen.add(name)
        dist = metadata.distribution(requirement.name)
        for entry in dist.requires or ():
            todo.append(Requirement(entry))
        for file in dist.files or ():
            parts = Path(str(file)).parts
            if parts[0] == ".." or "__pycache__" in parts or str(file).endswith(".pyc"):
                continue  # console scripts outside site-packages; bytecode is compiled below
            if parts[:2] == ("botocore", "data") and len(parts) > 3 and parts[2] not in BOTOCORE_SERVICES:
                continue  # pruned below anyway: not copying them saves seconds per build
            source = Path(str(dist.locate_file(file)))
            target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def prune_dependencies(out: Path) -> None:
    shutil.rmtree(out / "bin", ignore_errors=True)  # console scripts pip --target writes
    data = out / "botocore" / "data"
    if data.is_dir():
        for entry in data.iterdir():
            # Top-level files (endpoints.json, partitions.json, sdk-default-configuration.json,
            # _retry.json) are read whenever a client is created: all kept.
            if entry.is_dir() and entry.name not in BOTOCORE_SERVICES:
                shutil.rmtree(entry)
        missing = [s for s in BOTOCORE_SERVICES if not (data / s).is_dir()]
        if missing:
            raise SystemExit(f"botocore has no service data for {missing}")
        prune_endpoints(data / "endpoints.json")


def prune_endpoints(path: Path) -> None:
    """endpoints.json (1.2 MB, parsed whenever a client is created) with only BOTOCORE_SERVICES' entries.

    botocore looks a service up in it by its endpoint prefix (for DynamoDB and Secrets
    Manager, the service name); partition data (regions, DNS suffixes, defaults) is kept
    whole. Parsing it shrinks from ~15-60 ms to well under 1 ms of every cold start.
    """
    document = json.loads(path.read_text())
    for partition in document.get("partitions", []):
        services = partition.get("services", {})
        partition["services"] = {name: services[name] for name in BOTOCORE_SERVICES if name in services}
    path.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True))


def strip_debug_info(out: Path) -> None:
    """Debug sections out of compiled extensions (uvloop's arm64 build: 16 MB, 1.9 MB without them).

    ``--strip-debug`` removes only the DWARF sections, never symbols the loader needs.
    llvm-strip handles every architecture; GNU strip only its own, so on an x86 host an
    arm64 library may be left as it is (the package is then larger, not broken).
    """
    tool = os.environ.get("LAMBDA_STRIP") or shutil.which("llvm-strip") or shutil.which("strip")
    if not tool:
        print("no strip tool found: compiled extensions keep their debug info", file=sys.stderr)
        return
    for library in sorted(out.rglob("*.so")):
        done = subprocess.run([tool, "--strip-debug", str(library)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{tool} could not strip {library.relative_to(out)}: {done.stderr.strip()}", file=sys.stderr)


def copy_app(out: Path) -> None:
    for name in APP_FILES:
        shutil.copy2(ROOT / name, out / name)

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n in DEV_DIRS or n in DEV_FILES or n.endswith((".pyc", ".pyo"))}

    shutil.copytree(ROOT / APP_PACKAGE, out / APP_PACKAGE, ignore=ignore)


def compile_python(requested: str | None, python_version: str) -> str:
    """An interpreter of the target's version: bytecode is only valid for the version that wrote it."""
    candidates = [requested] if requested else [sys.executable, f"python{python_version}"]
    for candidate in candidates:
        path = shutil.which(candidate) or candidate
        try:
            found = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if found.returncode == 0 and found.stdout.strip() == python_version:
            return path
    raise SystemExit(
        f"No Python {python_version} to compile the bytecode with (bytecode is per Python version, and "
        f"Lambda's /var/task is read-only, so bytecode of another version is ignored and every cold start "
        f"compiles from source). Install python{python_version}, point LAMBDA_COMPILE_PYTHON (make) / "
        f"--compile-python at one, or build in SAM's container: `sam build --use-container`."
    )


def compile_bytecode(out: Path, python: str) -> None:
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
         "-s", str(out), "-p", LAMBDA_ROOT, str(out)],
        check=True,
    )


def write_zip(out: Path, target: Path) -> int:
    """A reproducible zip (sorted, fixed timestamps, modes kept: the bootstrap must stay executable)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MARKER):
            info = zipfile.ZipInfo(path.relative_to(out).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return target.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the package directory (SAM: $ARTIFACTS_DIR)")
    parser.add_argument("--zip", type=Path, help="also write the package as this zip file")
    parser.add_argument("--deps", choices=("pip", "current"), default="pip",
                        help="pip: wheels for --platform from the index (default); current: copy them from "
                             "this interpreter's environment (then the package is for this interpreter)")
    parser.add_argument("--platform", default="manylinux2014_aarch64",
                        help="wheel platform for --deps pip (default: Lambda arm64); '' for this machine")
    parser.add_argument("--python-version", default="3.13", help="target Python (default 3.13, the template's)")
    parser.add_argument("--compile-python", default=os.environ.get("LAMBDA_COMPILE_PYTHON") or None,
                        help="interpreter that compiles the bytecode; must be the target version "
                             "(default: this one or python<version> on PATH)")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    if args.deps == "current" or not args.platform:
        args.python_version = "%d.%d" % sys.version_info[:2]
    python = compile_python(args.compile_python, args.python_version)  # fail before any work
    requirements = runtime_requirements(args.requirements)
    prepare(out)
    if args.deps == "pip":
        install_from_pip(out, requirements, args.platform, args.python_version)
    else:
        copy_from_current(out, requirements)
    prune_dependencies(out)
    strip_debug_info(out)
    copy_app(out)
    compile_bytecode(out, python)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"Lambda package for Python {args.python_version}: {out} ({size / 2**20:.1f} MiB unzipped)")
    if args.zip:
        zipped = write_zip(out, args.zip.resolve())
        print(f"zipped: {args.zip} ({zipped / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
