"""template.yaml: lint-clean, and the settings the Lambda side depends on are really there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"


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


def test_http_api_routes_for_sam_local(function: dict[str, Any]) -> None:
    routes = {
        (e["Properties"]["Path"], e["Properties"]["Method"])
        for e in function["Events"].values()
        if e["Type"] == "HttpApi"
    }
    assert routes == {("/v1/{proxy+}", "ANY"), ("/health", "GET")}


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
    assert "OPENAI_API_KEY" not in variables
    assert "OPENAI_API_KEY_SECRET_ARN" in variables
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
