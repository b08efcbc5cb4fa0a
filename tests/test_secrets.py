"""Upstream keys read from Secrets Manager (moto) at start, never from the template."""

from __future__ import annotations

import botocore.session

from aisix.config import parse_config
from aisix.secrets import resolve_secrets


def test_a_secret_arn_fills_the_models_key_variable(moto_endpoint):
    client = botocore.session.get_session().create_client(
        "secretsmanager", endpoint_url=moto_endpoint, region_name="us-east-1"
    )
    arn = client.create_secret(Name="aisix-openai-test", SecretString="sk-from-secrets-manager")["ARN"]
    env = {"OPENAI_API_KEY_SECRET_ARN": arn, "OTHER_KEY": "already-set", "OTHER_KEY_SECRET_ARN": arn}
    assert resolve_secrets(env, client) == ["OPENAI_API_KEY"]
    assert env["OPENAI_API_KEY"] == "sk-from-secrets-manager"
    assert env["OTHER_KEY"] == "already-set", "an explicit value wins"
    config = parse_config(
        {"models": [{"name": "m", "model": "gpt-4o-mini", "base_url": "https://api.openai.com/v1",
                     "api_key_env": "OPENAI_API_KEY"}]},
        env,
    )
    assert config.models["m"].api_key == "sk-from-secrets-manager"
