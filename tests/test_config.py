"""The models file and settings: validated once, with errors that say where."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aisix.config import ConfigError, Settings, load_config, model_names, parse_config

ROOT = Path(__file__).resolve().parents[1]

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
    assert load_config(path, {"MY_KEY": "k"}).models["my-gpt4-mini"].base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "'models' must be a non-empty list"),
        ({"models": [{"name": "a", "model": "m"}]}, "model 'a' (models[0]): base_url is required"),
        ({"models": [{"model": "m"}]}, "models[0]: name is required"),
        ({"models": [{**GOOD["models"][0], "timeout": -1}]}, "model 'a' (models[0]): timeout"),
        ({"models": [{**GOOD["models"][0], "provider": "carrier-pigeon"}]}, "model 'a' (models[0]): provider 'carrier-pigeon'"),
        ({"models": [{**GOOD["models"][0], "api_key": "sk-inline"}]},
         "model 'a' (models[0]): unknown keys ['api_key']"),
        ({"models": GOOD["models"] * 2}, "models[1]: duplicate model name 'a'"),
        ({"models": [{**GOOD["models"][0], "base_url": "${NOPE}"}]},
         "model 'a' (models[0]): environment variable NOPE"),
        ({"models": [{**GOOD["models"][0], "created": "yesterday"}]}, "model 'a' (models[0]): created"),
        ({**GOOD, "hooks": ["no_colon"]}, "'hooks' must be a list of import paths"),
    ],
)
def test_bad_models_files_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, {})
    assert message in str(info.value)


BAD_FILES = {
    "timeout": ("models:\n  - name: fast\n    model: m\n    base_url: http://x/v1\n    timeout: soon\n",
                "model 'fast' (models[0]): timeout"),
    "yaml": ("models:\n  - name: fast\n    model: a: b\n",
             "line 3: not valid YAML (mapping values are not allowed here)"),
    "env": ("models:\n  - name: fast\n    model: m\n    base_url: ${AISIX_TEST_UNSET_URL}\n",
            "model 'fast' (models[0]): environment variable AISIX_TEST_UNSET_URL is not set"),
    "key": ("models:\n  - name: fast\n    model: m\n    base_url: http://x/v1\n    api_key_env: AISIX_TEST_UNSET_KEY\n",
            "model 'fast': api_key_env names AISIX_TEST_UNSET_KEY, which is not set"),
}


@pytest.mark.parametrize("mistake", BAD_FILES)
def test_a_mistake_in_the_models_file_is_one_line_naming_the_file_and_the_alias(tmp_path, mistake):
    text, message = BAD_FILES[mistake]
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(f"{path}")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_upstream_key_variable_that_is_unset_or_empty_stops_the_start(tmp_path):
    """Not a silent call without credentials: the gateway refuses to start (the CLI needs no key)."""
    path = tmp_path / "models.yaml"
    path.write_text(BAD_FILES["key"][0])
    for environ in ({}, {"AISIX_TEST_UNSET_KEY": ""}):
        with pytest.raises(ConfigError, match="AISIX_TEST_UNSET_KEY"):
            load_config(path, environ)
    assert load_config(path, {"AISIX_TEST_UNSET_KEY": "sk-x"}).models["fast"].api_key == "sk-x"
    assert load_config(path, {}, require_keys=False).models["fast"].api_key is None
    assert model_names(path, {}) == {"fast"}


def test_the_shipped_models_file_names_its_alias_for_the_key_cli():
    assert model_names(ROOT / "models.yaml", {}) == {"my-gpt4-mini"}


@pytest.mark.parametrize("mistake", ["timeout", "key"])
def test_serve_with_a_bad_models_file_prints_one_line_and_no_traceback(tmp_path, mistake):
    path = tmp_path / "models.yaml"
    path.write_text(BAD_FILES[mistake][0])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISIX_", "OPENAI_"))}
    env["AISIX_CONFIG"] = str(path)
    result = subprocess.run(
        [sys.executable, "-m", "aisix", "serve", "--port", "9"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {path}: ")
    assert BAD_FILES[mistake][1] in result.stderr


def test_settings_from_environment():
    s = Settings.from_env({"AISIX_KEY_CACHE_SECONDS": "2.5", "AISIX_MAX_BODY_BYTES": "1000", "AWS_REGION": "eu-west-1"})
    assert (s.key_cache_seconds, s.max_body_bytes, s.region, s.keys_table) == (2.5, 1000, "eu-west-1", "aisix-keys")
    with pytest.raises(ConfigError, match="AISIX_MAX_BODY_BYTES"):
        Settings.from_env({"AISIX_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ConfigError, match="AISIX_UPSTREAM_TRANSPORT"):
        Settings.from_env({"AISIX_UPSTREAM_TRANSPORT": "carrier-pigeon"})
