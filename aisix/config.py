"""Configuration, read and validated once at start.

Two sources, each for what it is good at:

* the models file (YAML, path in ``AISIX_CONFIG``): model aliases and user hooks;
* the environment: where the tables are, limits, time-outs.

String values in the models file may name environment variables as
``${NAME}`` or ``${NAME:-default}``, so one file serves every stage.
Upstream keys are never written in the file: a model names the variable
that holds its key (``api_key_env``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

# The upstream APIs a model may use (one module each in aisix/providers/).
PROVIDERS = ("openai", "azure", "anthropic", "bedrock", "gemini")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One alias a client may ask for, and where its calls go."""

    name: str
    provider: str
    model: str
    base_url: str
    timeout: float
    api_key_env: str | None = None
    created: int = 0
    owned_by: str = "aisix"
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None  # Azure OpenAI's api-version
    region: str | None = None  # Bedrock's AWS region
    # The output budget sent when a client sends none (Anthropic and Bedrock need one).
    max_tokens: int | None = None

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    models: Mapping[str, ModelConfig]
    hooks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Deployment settings from the environment (see README, "Settings")."""

    config_path: str = "models.yaml"
    keys_table: str = "aisix-keys"
    counters_table: str = "aisix-counters"
    dynamodb_endpoint: str | None = None
    region: str = "us-east-1"
    key_cache_seconds: float = 10.0
    max_body_bytes: int = 4 * 1024 * 1024
    keepalive_seconds: float = 10.0
    upstream_max_connections: int = 1000
    upstream_transport: str = "aiohttp"
    rate_limit_on_store_error: str = "closed"
    deadline_margin_seconds: float = 2.0
    token_flush_seconds: float = 1.0
    dynamodb_timeout_seconds: float = 1.0
    dynamodb_max_attempts: int = 2
    # Calls in flight per process past which new ones get a prompt 503 (0: no limit); off on Lambda, where
    # an instance serves one call at a time. Measured (`python -m bench.run --only streams`, streams of 10
    # events/s, one process on one core, 2026-11-30): 1,000 held, 1,500 collapsed (first chunks after a
    # minute, 503s after 10 s). At 800 the core was ~90% busy and, on a machine busy with other work too,
    # refusals waited seconds (p50 8 s); 500 keeps ~40% of the core for accepting and refusing calls at
    # once. bench/RESULTS.md re-checks it (a 503 within 1 s, every held stream flowing).
    max_open_calls: int = 500
    # Decided here once: the rest of the gateway asks this, never the environment.
    on_lambda: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        def get(name: str, default: Any, cast: Any = str) -> Any:
            raw = environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                return cast(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a valid {cast.__name__}") from None

        d = cls()
        on_lambda = bool(environ.get("AWS_LAMBDA_FUNCTION_NAME"))
        settings = cls(
            config_path=get("AISIX_CONFIG", d.config_path),
            keys_table=get("AISIX_KEYS_TABLE", d.keys_table),
            counters_table=get("AISIX_COUNTERS_TABLE", d.counters_table),
            dynamodb_endpoint=get("AISIX_DYNAMODB_ENDPOINT", None),
            region=get("AWS_REGION", get("AWS_DEFAULT_REGION", d.region)),
            key_cache_seconds=get("AISIX_KEY_CACHE_SECONDS", d.key_cache_seconds, float),
            max_body_bytes=get("AISIX_MAX_BODY_BYTES", d.max_body_bytes, int),
            keepalive_seconds=get("AISIX_KEEPALIVE_SECONDS", d.keepalive_seconds, float),
            upstream_max_connections=get(
                "AISIX_UPSTREAM_MAX_CONNECTIONS", d.upstream_max_connections, int
            ),
            # On Lambda: one call at a time per instance, so aiohttp's pool buys little
            # and its import costs every cold start (see aisix/providers/transport.py).
            upstream_transport=get("AISIX_UPSTREAM_TRANSPORT", "lean" if on_lambda else d.upstream_transport),
            rate_limit_on_store_error=get(
                "AISIX_RATE_LIMIT_ON_STORE_ERROR", d.rate_limit_on_store_error
            ),
            deadline_margin_seconds=get(
                "AISIX_DEADLINE_MARGIN_SECONDS", d.deadline_margin_seconds, float
            ),
            dynamodb_timeout_seconds=get("AISIX_DYNAMODB_TIMEOUT_SECONDS", d.dynamodb_timeout_seconds, float),
            dynamodb_max_attempts=get("AISIX_DYNAMODB_MAX_ATTEMPTS", d.dynamodb_max_attempts, int),
            token_flush_seconds=get("AISIX_TOKEN_FLUSH_SECONDS", d.token_flush_seconds, float),
            max_open_calls=get("AISIX_MAX_OPEN_CALLS", 0 if on_lambda else d.max_open_calls, int),
            on_lambda=on_lambda,
        )
        if settings.upstream_transport not in ("aiohttp", "lean", "httpx"):
            raise ConfigError("AISIX_UPSTREAM_TRANSPORT must be 'aiohttp', 'lean' or 'httpx'")
        if settings.rate_limit_on_store_error not in ("closed", "open"):
            raise ConfigError("AISIX_RATE_LIMIT_ON_STORE_ERROR must be 'closed' or 'open'")
        if settings.max_open_calls < 0:
            raise ConfigError("AISIX_MAX_OPEN_CALLS must be 0 (no limit) or positive")
        if settings.max_body_bytes <= 0 or settings.keepalive_seconds <= 0:
            raise ConfigError("AISIX_MAX_BODY_BYTES and AISIX_KEEPALIVE_SECONDS must be positive")
        return settings


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            resolved = environ.get(name) or default
            if resolved is None:
                raise ConfigError(f"environment variable {name} is not set and has no default")
            return resolved

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, environ) for k, v in value.items()}
    return value


def _read_models_file(path: str | os.PathLike[str]) -> Any:
    """The file's YAML; a problem is one line naming the file (and the line, for bad YAML)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read models file {str(path)!r} ({exc.strerror}); AISIX_CONFIG names the file"
        ) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ, *, require_keys: bool = True
) -> GatewayConfig:
    """Read and validate the models file; every problem is one line naming the file and the alias.

    With ``require_keys``, a model whose ``api_key_env`` names a variable that
    is unset (or empty) is an error: the gateway would otherwise call the
    upstream without credentials and every call would fail there.
    """
    raw = _read_models_file(path)
    try:
        config = parse_config(raw, environ, default_created=int(Path(path).stat().st_mtime))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if require_keys:
        for model in config.models.values():
            if model.api_key_env and not model.api_key:
                raise ConfigError(
                    f"{path}: model {model.name!r}: api_key_env names {model.api_key_env}, which is not set "
                    f"(set it to the upstream's key, to anything for an upstream that needs none, "
                    f"or remove api_key_env)"
                )
    return config


def model_names(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The aliases the models file declares, without needing what serving them needs (keys, URLs)."""
    raw = _read_models_file(path)
    entries = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'models' must be a non-empty list")
    names = set()
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: models[{index}]: name is required and must be a string")
        try:
            names.add(_expand(name, environ))
        except ConfigError as exc:
            raise ConfigError(f"{path}: models[{index}]: name: {exc}") from None
    return frozenset(names)


_MODEL_KEYS = frozenset({
    "name", "provider", "model", "base_url", "api_key_env", "timeout", "created", "owned_by",
    "api_version", "region", "max_tokens",
})


def parse_config(
    raw: Any, environ: Mapping[str, str] = os.environ, default_created: int = 0
) -> GatewayConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the models file must be a mapping with a 'models' list")
    entries = raw.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("'models' must be a non-empty list")
    models: dict[str, ModelConfig] = {}
    for index, entry in enumerate(entries):
        model = _parse_model(index, entry, environ, default_created)
        if model.name in models:
            raise ConfigError(f"models[{index}]: duplicate model name {model.name!r}")
        models[model.name] = model
    try:
        hooks = _expand(raw.get("hooks") or [], environ)
    except ConfigError as exc:
        raise ConfigError(f"hooks: {exc}") from None
    if not isinstance(hooks, list) or not all(isinstance(h, str) and ":" in h for h in hooks):
        raise ConfigError("'hooks' must be a list of import paths like 'package.module:HookClass'")
    return GatewayConfig(models=models, hooks=tuple(hooks))


def _parse_model(index: int, entry: Any, environ: Mapping[str, str], default_created: int) -> ModelConfig:
    """One ``models`` entry; errors name the alias when it has one (``model 'x' (models[0])``)."""
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping")
    if isinstance(entry.get("name"), str) and entry["name"]:
        where = f"model {entry['name']!r} ({where})"
    try:
        entry = _expand(entry, environ)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = set(entry) - _MODEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    provider = entry.get("provider", "openai")
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}: provider {provider!r} is not one of {list(PROVIDERS)}")
    region = entry.get("region")
    if provider == "bedrock":
        region = region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
            raise ConfigError(f"{where}: region must be an AWS region such as us-east-1")
        entry.setdefault("base_url", f"https://bedrock-runtime.{region}.amazonaws.com")
    for required in ("name", "model", "base_url"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise ConfigError(f"{where}: {required} is required and must be a string")
    api_version = entry.get("api_version")
    if api_version is not None and not isinstance(api_version, str):
        raise ConfigError(f"{where}: api_version must be a string such as \"2024-10-21\"")
    max_tokens = entry.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0):
        raise ConfigError(f"{where}: max_tokens must be a positive whole number")
    timeout = entry.get("timeout", 60)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"{where}: timeout must be a positive number of seconds")
    api_key_env = entry.get("api_key_env")
    if api_key_env is not None and not isinstance(api_key_env, str):
        raise ConfigError(f"{where}: api_key_env must name an environment variable")
    if not entry["base_url"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}: base_url must be an http(s) URL")
    try:
        created = int(entry.get("created", default_created))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: created must be a whole number (Unix seconds)") from None
    return ModelConfig(
        name=entry["name"],
        provider=provider,
        model=entry["model"],
        base_url=entry["base_url"],
        timeout=float(timeout),
        api_key_env=api_key_env,
        created=created,
        owned_by=str(entry.get("owned_by", "aisix")),
        api_key=environ.get(api_key_env) if api_key_env else None,
        api_version=api_version,
        region=region if provider == "bedrock" else None,
        max_tokens=max_tokens,
    )
