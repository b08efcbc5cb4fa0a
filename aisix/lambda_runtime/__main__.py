"""`python -m aisix.lambda_runtime [module:attr]` — serve an ASGI app as this function's runtime."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import traceback
from typing import Any

from .loop import run
from .runtime_api import RuntimeAPI

DEFAULT_APP = "handler:app"


def load_app(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for name in (attr or "app").split("."):
        obj = getattr(obj, name)
    return obj


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else DEFAULT_APP
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        print(
            "AWS_LAMBDA_RUNTIME_API is not set: this runs inside Lambda, or against\n"
            "`python -m aisix.local.lambda_emulator` locally.",
            file=sys.stderr,
        )
        return 2
    try:
        app = load_app(target)
    except Exception as exc:
        # What the managed runtime reports, so the console shows the familiar error.
        kind = "Runtime.HandlerNotFound" if isinstance(exc, AttributeError) else "Runtime.ImportModuleError"
        traceback.print_exc()
        message = f"Unable to import {target}: {type(exc).__name__}: {exc}"
        asyncio.run(RuntimeAPI(address).post_init_error(kind, message, type(exc).__name__))
        return 1
    logging.basicConfig(
        level=os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper(), format="%(levelname)s %(name)s %(message)s"
    )
    run(app, runtime_api=address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
