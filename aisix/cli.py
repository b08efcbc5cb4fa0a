"""``python -m aisix``: manage API keys and tables, and serve the gateway.

    python -m aisix keys create --name team-a --models my-gpt4-mini --rpm 60 --tpm 100000
    python -m aisix keys list
    python -m aisix keys revoke key_0123456789ab
    python -m aisix tables create
    python -m aisix serve [--local] [--lambda] [--port 3000]
    python -m aisix local-deps [--host 0.0.0.0] [--dynamodb-port 3005] [--upstream-port 3006]

Keys and tables use the same settings as the gateway (AISIX_KEYS_TABLE,
AISIX_COUNTERS_TABLE, AISIX_DYNAMODB_ENDPOINT, AWS_REGION and the usual AWS
credentials), so the same command manages a local or a deployed table.
Against a local endpoint (moto, DynamoDB Local) no AWS credentials are needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from .config import ConfigError, Settings

# Hosts of AWS's own endpoints; any other endpoint is a local or self-hosted DynamoDB.
AWS_ENDPOINT_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")


class CommandError(Exception):
    """A failure the user can fix; printed as one line, without a traceback."""


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    from .store import Store, make_client

    client = make_client(
        settings.dynamodb_endpoint, settings.region,
        timeout=settings.dynamodb_timeout_seconds, attempts=settings.dynamodb_max_attempts,
    )
    return Store(client, settings.keys_table, settings.counters_table)


def is_local_endpoint(endpoint: str | None) -> bool:
    """Whether DynamoDB calls go somewhere other than AWS (which then accepts any credentials)."""
    if not endpoint:
        return False
    host = (urlsplit(endpoint).hostname or "").lower()
    return not host.endswith(AWS_ENDPOINT_SUFFIXES)


def _no_credentials(exc: BaseException) -> bool:
    from botocore.exceptions import NoCredentialsError

    while exc is not None:
        if isinstance(exc, NoCredentialsError):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _with_store(settings: Settings, action: Callable[[Any], int]) -> int:
    """Run ``action(store)``, turning DynamoDB failures into one clear line.

    With a local endpoint and no AWS credentials anywhere, the call is made
    again with dummy ones: moto and DynamoDB Local accept any, and a call that
    found no credentials was never sent.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from .store import StoreUnavailable

    where = f"DynamoDB at {settings.dynamodb_endpoint}" if settings.dynamodb_endpoint else (
        f"DynamoDB in {settings.region}"
    )
    try:
        try:
            return action(_store(settings))
        except (StoreUnavailable, BotoCoreError, ClientError) as exc:
            if not (_no_credentials(exc) and is_local_endpoint(settings.dynamodb_endpoint)):
                raise
            os.environ["AWS_ACCESS_KEY_ID"] = "local"
            os.environ["AWS_SECRET_ACCESS_KEY"] = "local"
            os.environ.pop("AWS_SESSION_TOKEN", None)
            return action(_store(settings))
    except (StoreUnavailable, BotoCoreError, ClientError) as exc:
        if _no_credentials(exc):
            raise CommandError(
                f"no AWS credentials found for {where}: configure them (aws configure, AWS_PROFILE, "
                "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or set AISIX_DYNAMODB_ENDPOINT "
                "to a local DynamoDB"
            ) from None
        cause = exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ else exc
        code = cause.response["Error"]["Code"] if isinstance(cause, ClientError) else ""
        if code == "ResourceNotFoundException":
            raise CommandError(
                f"{where} has no table {settings.keys_table!r} or {settings.counters_table!r} "
                "(create them with `python -m aisix tables create`, or set AISIX_KEYS_TABLE / AISIX_COUNTERS_TABLE)"
            ) from None
        detail = " ".join(str(cause).split()) or type(cause).__name__
        raise CommandError(f"{where}: {detail}") from None


def _limit(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aisix", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--models", help="comma-separated model aliases, each declared in the models file (default: all)"
    )
    create.add_argument("--rpm", type=_limit, help="requests per minute (default: unlimited)")
    create.add_argument("--tpm", type=_limit, help="tokens per minute (default: unlimited)")
    keys.add_parser("list", help="list keys (never their secrets)")
    revoke = keys.add_parser("revoke", help="disable a key by its id")
    revoke.add_argument("key_id")
    enable = keys.add_parser("enable", help="enable a revoked key again")
    enable.add_argument("key_id")

    commands.add_parser("tables", help="DynamoDB tables").add_subparsers(dest="action", required=True).add_parser(
        "create", help="create the keys and counters tables if missing"
    )

    serve = commands.add_parser("serve", help="serve the gateway with uvicorn")
    serve.add_argument("--local", action="store_true", help="embedded default: moto DynamoDB + mock upstream")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument(
        "--lambda", dest="as_lambda", action="store_true",
        help="serve through the Lambda streaming runtime behind a local function URL emulation",
    )

    from .local.run import SAM_DEPS_DYNAMODB_PORT, SAM_DEPS_UPSTREAM_PORT

    deps = commands.add_parser(
        "local-deps",
        help="serve only moto DynamoDB and the mock upstream, reachable from containers (sam local start-api)",
    )
    deps.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)")
    deps.add_argument("--dynamodb-port", type=int, default=SAM_DEPS_DYNAMODB_PORT)
    deps.add_argument("--upstream-port", type=int, default=SAM_DEPS_UPSTREAM_PORT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .local.run import serve, serve_lambda

        if args.as_lambda:
            return serve_lambda(local=args.local, port=args.port)
        return serve(local=args.local, host=args.host, port=args.port)
    if args.command == "local-deps":
        from .local.run import serve_deps

        return serve_deps(args.host, args.dynamodb_port, args.upstream_port)

    settings = Settings.from_env()
    if args.command == "tables":
        def create_tables(store: Any) -> int:
            store.create_tables()
            print(f"tables ready: {settings.keys_table}, {settings.counters_table}")
            return 0

        return _with_store(settings, create_tables)
    if args.action == "create":
        return _create_key(settings, args)
    if args.action == "list":
        return _with_store(settings, _list_keys)

    def set_enabled(store: Any) -> int:
        record = store.set_enabled(args.key_id, enabled=args.action == "enable")
        if record is None:
            print(f"no key with id {args.key_id}", file=sys.stderr)
            return 1
        print(f"{'revoked' if args.action == 'revoke' else 'enabled'} {record.key_id} ({record.name})")
        return 0

    return _with_store(settings, set_enabled)


def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    from .auth import issue_key
    from .config import model_names

    models = None
    if args.models:
        models = frozenset(m.strip() for m in args.models.split(",") if m.strip())
        declared = model_names(settings.config_path)
        unknown = sorted(models - declared)
        if unknown:
            raise CommandError(
                f"{', '.join(map(repr, unknown))} not declared in {settings.config_path} "
                f"(it declares: {', '.join(sorted(declared))}); AISIX_CONFIG names the models file"
            )

    def create(store: Any) -> int:
        secret, record = issue_key(store, args.name, models, args.rpm, args.tpm)
        print(f"created {record.key_id} ({record.name})")
        print(f"secret: {secret}")
        print("Store the secret now: it is not kept and cannot be shown again.")
        return 0

    return _with_store(settings, create)


def _list_keys(store: Any) -> int:
    rows = store.list_keys()
    print(f"{'KEY ID':<18} {'NAME':<20} {'STATUS':<8} {'RPM':>7} {'TPM':>9}  MODELS")
    for r in rows:
        models = ",".join(sorted(r.models)) if r.models is not None else "*"
        status = "enabled" if r.enabled else "revoked"
        print(f"{r.key_id:<18} {r.name:<20} {status:<8} {r.rpm or '-':>7} {r.tpm or '-':>9}  {models}")
    return 0
