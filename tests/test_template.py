"""template.yaml: lint-clean, and the settings the Lambda side depends on are really there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import decode

from aisix.config import Settings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
# What Lambda sets itself (reserved, or set by the runtime): a template cannot, and need not, declare them.
SET_BY_LAMBDA = re.compile(r"^(AWS_|_X_AMZN_|_HANDLER$|LAMBDA_TASK_ROOT$|LAMBDA_RUNTIME_DIR$|PYTHONPATH$|PATH$)")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return parsed


@pytest.fixture(scope="module")
def function(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["GatewayFunction"]["Properties"]


def test_cfn_lint_is_clean() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    command = str(cfn_lint) if cfn_lint.exists() else shutil.which("cfn-lint")
    assert command, "cfn-lint is not installed (requirements-dev.txt)"
    result = subprocess.run(
        [command, "--include-checks", "I", "--format", "parseable", "-t", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_function_url_streams_and_the_wrapper_is_wired(template: dict[str, Any], function: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert function["FunctionUrlConfig"] == {"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM"}
    assert function["Handler"] == "handler.handler"
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] in ("python3.12", "python3.13")
    assert globals_["Timeout"] == 900

    variables = function["Environment"]["Variables"]
    wrapper = variables["AWS_LAMBDA_EXEC_WRAPPER"]
    assert wrapper.startswith("/var/task/")
    local = ROOT / wrapper.removeprefix("/var/task/")
    assert local.is_file() and os.access(local, os.X_OK), f"{local} must exist and be executable"


def http_api_routes(function: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (e["Properties"]["Path"], e["Properties"]["Method"].upper())
        for e in function["Events"].values()
        if e["Type"] == "HttpApi"
    }


def routed(routes: set[tuple[str, str]], path: str, method: str) -> bool:
    """Whether API Gateway (or sam local) would hand ``method path`` to the function."""
    for route, allowed in routes:
        prefix = route.removesuffix("/{proxy+}")
        matches = path == route or (route.endswith("/{proxy+}") and path.startswith(prefix + "/"))
        if matches and allowed in ("ANY", method):
            return True
    return False


def test_http_api_routes_every_path_the_app_serves(function: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """An undeclared path gets API Gateway's 403 "Missing Authentication Token", not the app's answer."""
    from aisix.app import create_app

    monkeypatch.setenv("AISIX_CONFIG", str(ROOT / "models.yaml"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    app = create_app()
    served = {(route.path, method) for route in app.routes for method in route.methods or () if method != "HEAD"}
    assert ("/openapi.json", "GET") in served and ("/v1/chat/completions", "POST") in served
    routes = http_api_routes(function)
    missing = sorted(f"{m} {p}" for p, m in served if not routed(routes, p, m))
    assert not missing, f"template.yaml routes none of {missing}"
    assert routed(routes, "/v1/anything/later", "POST")  # later /v1 endpoints need no template change


def settings_the_code_reads() -> set[str]:
    """Every environment variable the function's code reads.

    Settings.from_env (aisix/config.py, the gateway's settings) is run against a
    recording mapping; the rest (the runtime loop, the wrapper script, secrets)
    is found in the source: ``environ``/``getenv`` reads, ``AISIX_*`` names, the
    wrapper's ``${...}``. The models file adds the variables it names
    (``${VAR}``, ``api_key_env``) and, for each key variable, the
    ``<NAME>_SECRET_ARN`` aisix/secrets.py looks for.
    """
    names: set[str] = set()

    class Recording(dict):
        def get(self, key: str, default: Any = None) -> Any:
            names.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> Any:
            names.add(key)
            return super().__getitem__(key)

    Settings.from_env(Recording())

    sources = [ROOT / "handler.py", ROOT / "aisix" / "lambda_runtime" / "bootstrap"]
    sources += [p for p in (ROOT / "aisix").rglob("*.py") if "local" not in p.relative_to(ROOT / "aisix").parts]
    literal = r"[\"']([A-Z_][A-Z0-9_]*)[\"']"
    patterns = [
        re.compile(r"environ(?:\.get|\.setdefault|\.pop)?\s*[(\[]\s*" + literal),
        re.compile(r"getenv\(\s*" + literal),
        re.compile(r"[\"'](AISIX_[A-Z0-9_]+)[\"']"),
    ]
    for source in sources:
        text = source.read_text()
        for pattern in patterns:
            names.update(pattern.findall(text))
    # the wrapper script's ${NAME:-default}, outside comments
    script = (ROOT / "aisix" / "lambda_runtime" / "bootstrap").read_text()
    for line in script.splitlines():
        names.update(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", line.split("#", 1)[0]))

    models = yaml.safe_load((ROOT / "models.yaml").read_text())
    names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", yaml.safe_dump(models)))  # values, not comments
    for model in models["models"]:
        if model.get("api_key_env"):
            names.update({model["api_key_env"], model["api_key_env"] + "_SECRET_ARN"})
    return {n for n in names if not SET_BY_LAMBDA.match(n)}


def test_every_setting_the_code_reads_is_declared(function: dict[str, Any]) -> None:
    """`sam local start-api --env-vars` passes only declared variables: the two lists must not drift."""
    declared = set(function["Environment"]["Variables"])
    reads = settings_the_code_reads()
    assert {"AISIX_DYNAMODB_ENDPOINT", "AISIX_OPENAI_BASE_URL", "OPENAI_API_KEY", "AISIX_KEYS_TABLE"} <= reads
    assert not reads - declared, f"read by the code, not declared in template.yaml: {sorted(reads - declared)}"
    stale = {n for n in declared if n.startswith("AISIX_")} - reads
    assert not stale, f"declared in template.yaml, read by nothing: {sorted(stale)}"


def test_declared_but_empty_means_the_default() -> None:
    """The template declares optional settings as "": the gateway must read that as unset."""
    names: set[str] = set()

    class Recording(dict):
        def get(self, key: str, default: Any = None) -> Any:
            names.add(key)
            return super().get(key, default)

    Settings.from_env(Recording())
    lambda_env = {"AWS_LAMBDA_FUNCTION_NAME": "aisix"}
    empty = {n: "" for n in names if n.startswith("AISIX_")}
    assert len(empty) >= 10
    assert Settings.from_env({**lambda_env, **empty}) == Settings.from_env(lambda_env)
    assert Settings.from_env(empty) == Settings.from_env({})


def test_optional_settings_are_declared_empty(function: dict[str, Any]) -> None:
    variables = function["Environment"]["Variables"]
    given = {"AWS_LAMBDA_EXEC_WRAPPER", "AISIX_ASGI_APP", "AISIX_CONFIG", "AISIX_KEYS_TABLE", "AISIX_COUNTERS_TABLE",
             "AISIX_STREAM_REST_API", "OPENAI_API_KEY_SECRET_ARN"}
    not_empty = {n: v for n, v in variables.items() if n not in given and v != ""}
    assert not not_empty, not_empty


def test_built_by_the_repo_makefile_with_snapstart(template: dict[str, Any], function: dict[str, Any]) -> None:
    resource = template["Resources"]["GatewayFunction"]
    assert resource["Metadata"] == {"BuildMethod": "makefile"}
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^build-GatewayFunction:", makefile, re.M), "sam build runs make build-GatewayFunction"

    assert function["AutoPublishAlias"] == "live"
    assert function["SnapStart"] == {"ApplyOn": {"Ref": "SnapStart"}}
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["Default"] == "PublishedVersions" and set(parameter["AllowedValues"]) == {
        "PublishedVersions", "None"}
    # the third door invokes the alias too (the published, snapshotted version)
    uri = template["Resources"]["StreamingRestProxyMethod"]["Properties"]["Integration"]["Uri"]["Fn::Sub"]
    assert "${GatewayFunctionAliaslive}" in uri


def test_tables_keys_and_ttl(template: dict[str, Any], function: dict[str, Any]) -> None:
    resources = template["Resources"]
    keys, counters = resources["KeysTable"]["Properties"], resources["CountersTable"]["Properties"]
    assert keys["KeySchema"] == [{"AttributeName": "key_hash", "KeyType": "HASH"}]
    assert counters["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert keys["BillingMode"] == counters["BillingMode"] == "PAY_PER_REQUEST"
    assert counters["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}

    variables = function["Environment"]["Variables"]
    assert variables["AISIX_KEYS_TABLE"] == {"Ref": "KeysTable"}
    assert variables["AISIX_COUNTERS_TABLE"] == {"Ref": "CountersTable"}
    assert variables["AISIX_CONFIG"] == {"Ref": "ConfigFile"}
    assert template["Parameters"]["ConfigFile"]["Default"] == "models.yaml"


def test_least_privilege_and_no_secret_values(template: dict[str, Any], function: dict[str, Any]) -> None:
    policies = function["Policies"]
    assert not any(isinstance(p, (str, dict)) and "DynamoDBCrudPolicy" in str(p) for p in policies)
    keys, counters = policies[0]["Statement"]
    # The function only reads key records and updates counters; nothing else, nowhere else.
    assert (keys["Action"], keys["Resource"]) == ("dynamodb:GetItem", {"Fn::GetAtt": ["KeysTable", "Arn"]})
    assert (counters["Action"], counters["Resource"]) == (
        "dynamodb:UpdateItem", {"Fn::GetAtt": ["CountersTable", "Arn"]}
    )

    secret_statement = policies[1]["Fn::If"][1]["Statement"][0]
    assert secret_statement["Action"] == "secretsmanager:GetSecretValue"
    assert secret_statement["Resource"] == {"Ref": "OpenAIApiKeySecretArn"}

    variables = function["Environment"]["Variables"]
    assert variables["OPENAI_API_KEY"] == ""  # declared for sam local's --env-vars; on AWS the secret fills it
    assert variables["OPENAI_API_KEY_SECRET_ARN"] == {"Ref": "OpenAIApiKeySecretArn"}
    assert "resolve:" not in TEMPLATE.read_text()  # no dynamic reference copying a secret into the config


def test_streaming_rest_api_option(template: dict[str, Any]) -> None:
    method = template["Resources"]["StreamingRestProxyMethod"]
    assert method["Condition"] == "WithStreamingRestApi"
    integration = method["Properties"]["Integration"]
    assert integration["ResponseTransferMode"] == "STREAM"
    assert "/response-streaming-invocations" in integration["Uri"]["Fn::Sub"]


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["FunctionUrl"]["Value"] == {"Fn::GetAtt": ["GatewayFunctionUrl", "FunctionUrl"]}
    assert {"HttpApiUrl", "KeysTableName", "CountersTableName"} <= outputs.keys()
