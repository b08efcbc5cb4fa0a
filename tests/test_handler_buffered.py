"""handler.handler: the buffered Lambda entry (Mangum) with API Gateway v1 and v2 events.

handler.py is imported as Lambda imports it: configured only by the
environment, building the app once per process.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from types import SimpleNamespace

import pytest

from aisix.auth import hash_key, issue_key, key_id_for
from conftest import CHAT, sse_events


@pytest.fixture
def lambda_handler(monkeypatch, tmp_path, store, upstream):
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  - name: my-gpt4-mini\n"
        "    model: gpt-4o-mini\n"
        f"    base_url: {upstream.base_url}\n"
        "    timeout: 10\n"
    )
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "aisix-test")
    monkeypatch.setenv("AISIX_CONFIG", str(models))
    monkeypatch.setenv("AISIX_KEYS_TABLE", store.keys_table)
    monkeypatch.setenv("AISIX_COUNTERS_TABLE", store.counters_table)
    monkeypatch.setenv("AISIX_DYNAMODB_ENDPOINT", store.client.meta.endpoint_url)
    sys.modules.pop("handler", None)
    module = importlib.import_module("handler")
    yield module
    sys.modules.pop("handler", None)


CONTEXT = SimpleNamespace(aws_request_id="req-1", function_name="aisix-test",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:aisix-test",
                          get_remaining_time_in_millis=lambda: 30_000)


def http_api_event(method: str, path: str, headers: dict, body: bytes | None = None, b64: bool = False) -> dict:
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", **headers},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123", "requestId": "r1", "routeKey": "$default", "stage": "$default",
            "time": "24/Nov/2026:16:00:00 +0000", "timeEpoch": 1795536000000,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9",
                     "userAgent": "curl/8"},
        },
        "isBase64Encoded": b64,
    }
    if body is not None:
        event["body"] = base64.b64encode(body).decode() if b64 else body.decode()
    return event


def rest_api_event(method: str, path: str, headers: dict, body: bytes | None = None) -> dict:
    all_headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", **headers}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": "/prod" + path, "stage": "prod",
            "requestId": "r2", "accountId": "123456789012", "apiId": "abc123",
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "curl/8"},
        },
        "body": body.decode() if body is not None else None,
        "isBase64Encoded": False,
    }


def body_of(result: dict) -> str:
    raw = result["body"]
    return base64.b64decode(raw).decode() if result.get("isBase64Encoded") else raw


def test_http_api_v2_completion_and_models(lambda_handler, store):
    secret, _ = issue_key(store, "lambda", rpm=10)
    auth = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    result = lambda_handler.handler(
        http_api_event("POST", "/v1/chat/completions", auth, json.dumps(CHAT).encode(), b64=True), CONTEXT
    )
    assert result["statusCode"] == 200
    assert json.loads(body_of(result))["object"] == "chat.completion"
    assert result["headers"]["x-ratelimit-remaining-requests"] == "9"
    models = lambda_handler.handler(http_api_event("GET", "/v1/models", auth), CONTEXT)
    assert [m["id"] for m in json.loads(body_of(models))["data"]] == ["my-gpt4-mini"]


def test_rest_api_v1_streamed_request_is_answered_whole(lambda_handler, store):
    secret, _ = issue_key(store, "lambda", tpm=100_000)
    auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    result = lambda_handler.handler(
        rest_api_event("POST", "/v1/chat/completions", auth, json.dumps({**CHAT, "stream": True}).encode()), CONTEXT
    )
    assert result["statusCode"] == 200
    events = sse_events(body_of(result))
    assert events[-1] == "[DONE]" and len(events) > 10
    # On Lambda, token charges are written before the invocation returns.
    assert store.read_window(key_id_for(hash_key(secret))).tokens > 0


def test_errors_before_the_call_are_http_errors(lambda_handler, store):
    result = lambda_handler.handler(
        http_api_event("POST", "/v1/chat/completions", {"content-type": "application/json"},
                       json.dumps(CHAT).encode()), CONTEXT
    )
    assert result["statusCode"] == 401
    assert json.loads(body_of(result))["error"]["code"] == "invalid_api_key"
    secret, _ = issue_key(store, "lambda", rpm=1)
    auth = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    event = http_api_event("POST", "/v1/chat/completions", auth, json.dumps({**CHAT, "model": "nope"}).encode())
    assert lambda_handler.handler(event, CONTEXT)["statusCode"] == 404
