"""Upstream keys from AWS Secrets Manager, read once at start.

A model names the environment variable holding its upstream key
(``api_key_env: OPENAI_API_KEY``). On AWS the key itself is kept out of the
template and the function's configuration: the function gets
``OPENAI_API_KEY_SECRET_ARN`` instead, and this module reads the secret into
``OPENAI_API_KEY`` before the models file is loaded. The secret's string is
the key itself.
"""

from __future__ import annotations

import os
from typing import Any, MutableMapping

SUFFIX = "_SECRET_ARN"


def resolve_secrets(environ: MutableMapping[str, str] = os.environ, client: Any = None) -> list[str]:
    """Fill ``NAME`` from the secret ``NAME_SECRET_ARN`` names, unless ``NAME`` is set. Returns the names filled."""
    filled = []
    for name, arn in list(environ.items()):
        if not name.endswith(SUFFIX) or not arn:
            continue
        target = name[: -len(SUFFIX)]
        if environ.get(target):
            continue
        if client is None:
            import botocore.session

            client = botocore.session.get_session().create_client("secretsmanager")
        environ[target] = client.get_secret_value(SecretId=arn)["SecretString"]
        filled.append(target)
    return filled
