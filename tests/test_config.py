"""The models file and settings: validated once, with errors that say where."""

from __future__ import annotations

import pytest

from aisix.config import ConfigError, Settings, load_config, parse_config

GOOD = {"models": [{"name": "a", "model": "gpt-4o-mini", "base_url": "https://api.openai.com/v1",
                    "api_key_env": "OPENAI_API_KEY"}]}


def test_models_file_with_env_references(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - name: my-gpt4-mini\n"
        "    model: gpt-4o-mini\n"
        "    base_url: ${BASE:-https://api.openai.com/v1}\n"
        "    api_key_env: MY_KEY\n"
        "    timeout: 30\n"
    )
    config = load_config(path, {"BASE": "http://127.0.0.1:9/v1", "MY_KEY": "sk-up"})
    model = config.models["my-gpt4-mini"]
    assert model.chat_url == "http://127.0.0.1:9/v1/chat/completions"
    assert model.api_key == "sk-up" and "sk-up" not in repr(model)
    assert model.timeout == 30.0 and model.created > 0
    assert load_config(path, {}).models["my-gpt4-mini"].base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "'models' must be a non-empty list"),
        ({"models": [{"name": "a", "model": "m"}]}, "models[0].base_url is required"),
        ({"models": [{**GOOD["models"][0], "timeout": -1}]}, "models[0].timeout"),
        ({"models": [{**GOOD["models"][0], "provider": "bedrock"}]}, "provider 'bedrock'"),
        ({"models": [{**GOOD["models"][0], "api_key": "sk-inline"}]}, "unknown keys ['api_key']"),
        ({"models": GOOD["models"] * 2}, "duplicate model name 'a'"),
        ({"models": [{**GOOD["models"][0], "base_url": "${NOPE}"}]}, "NOPE is not set"),
        ({**GOOD, "hooks": ["no_colon"]}, "'hooks' must be a list of import paths"),
    ],
)
def test_bad_models_files_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {})
    assert message in str(info.value)


def test_settings_from_environment():
    s = Settings.from_env({"AISIX_KEY_CACHE_SECONDS": "2.5", "AISIX_MAX_BODY_BYTES": "1000", "AWS_REGION": "eu-west-1"})
    assert (s.key_cache_seconds, s.max_body_bytes, s.region, s.keys_table) == (2.5, 1000, "eu-west-1", "aisix-keys")
    with pytest.raises(ConfigError, match="AISIX_MAX_BODY_BYTES"):
        Settings.from_env({"AISIX_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ConfigError, match="AISIX_UPSTREAM_TRANSPORT"):
        Settings.from_env({"AISIX_UPSTREAM_TRANSPORT": "carrier-pigeon"})
