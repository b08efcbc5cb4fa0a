"""``python -m aisix``: manage API keys and tables, and serve the gateway.

    python -m aisix keys create --name team-a --models my-gpt4-mini --rpm 60 --tpm 100000
    python -m aisix keys list
    python -m aisix keys revoke key_0123456789ab
    python -m aisix tables create
    python -m aisix serve [--local] [--lambda] [--port 3000]

Keys and tables use the same settings as the gateway (AISIX_KEYS_TABLE,
AISIX_COUNTERS_TABLE, AISIX_DYNAMODB_ENDPOINT, AWS_REGION and the usual AWS
credentials), so the same command manages a local or a deployed table.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .config import Settings


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    from .store import Store, make_client

    client = make_client(
        settings.dynamodb_endpoint, settings.region,
        timeout=settings.dynamodb_timeout_seconds, attempts=settings.dynamodb_max_attempts,
    )
    return Store(client, settings.keys_table, settings.counters_table)


def _limit(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aisix", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--models", help="comma-separated model aliases (default: all)")
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

    args = parser.parse_args(argv)
    if args.command == "serve":
        from .local.run import serve, serve_lambda

        if args.as_lambda:
            return serve_lambda(local=args.local, port=args.port)
        return serve(local=args.local, host=args.host, port=args.port)

    settings = Settings.from_env()
    store = _store(settings)
    if args.command == "tables":
        store.create_tables()
        print(f"tables ready: {settings.keys_table}, {settings.counters_table}")
        return 0
    if args.action == "create":
        from .auth import issue_key

        models = frozenset(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
        secret, record = issue_key(store, args.name, models, args.rpm, args.tpm)
        print(f"created {record.key_id} ({record.name})")
        print(f"secret: {secret}")
        print("Store the secret now: it is not kept and cannot be shown again.")
        return 0
    if args.action == "list":
        rows = store.list_keys()
        print(f"{'KEY ID':<18} {'NAME':<20} {'STATUS':<8} {'RPM':>7} {'TPM':>9}  MODELS")
        for r in rows:
            models = ",".join(sorted(r.models)) if r.models is not None else "*"
            status = "enabled" if r.enabled else "revoked"
            print(f"{r.key_id:<18} {r.name:<20} {status:<8} {r.rpm or '-':>7} {r.tpm or '-':>9}  {models}")
        return 0
    record = store.set_enabled(args.key_id, enabled=args.action == "enable")
    if record is None:
        print(f"no key with id {args.key_id}", file=sys.stderr)
        return 1
    print(f"{'revoked' if args.action == 'revoke' else 'enabled'} {record.key_id} ({record.name})")
    return 0
