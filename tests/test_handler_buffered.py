"""handler.handler: the buffered Lambda entry (Mangum) with API Gateway v1 and v2 events.

handler.py is imported as Lambda imports it: configured only by the
environment, building the app once per process.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from pathlib import Path
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
    # Charges written as they happen (Lambda may otherwise coalesce them across invocations).
    monkeypatch.setenv("AISIX_TOKEN_FLUSH_SECONDS", "0")
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
    # With AISIX_TOKEN_FLUSH_SECONDS=0 the charge is written before the invocation returns.
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


# --- events as SAM CLI builds them (tests/sam_events/README.md) --------------------------------

SAM_EVENTS = Path(__file__).resolve().parent / "sam_events"


def sam_event(name: str) -> dict:
    return json.loads((SAM_EVENTS / f"{name}.json").read_text())


def error_of(result: dict) -> dict:
    body = json.loads(body_of(result))
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_sam_generate_event_http_api_proxy(lambda_handler, store):
    event = sam_event("generate-event-http-api-proxy")
    # As generated (POST /path/to/resource): the app's own 404, in OpenAI's shape.
    result = lambda_handler.handler(event, CONTEXT)
    assert result["statusCode"] == 404
    error_of(result)

    secret, _ = issue_key(store, "sam", rpm=10)
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/chat/completions"
    event["headers"].update({"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    event["body"] = base64.b64encode(json.dumps(CHAT).encode()).decode()
    result = lambda_handler.handler(event, CONTEXT)
    assert result["statusCode"] == 200, body_of(result)
    assert json.loads(body_of(result))["object"] == "chat.completion"


def test_sam_generate_event_aws_proxy(lambda_handler, store):
    event = sam_event("generate-event-aws-proxy")
    result = lambda_handler.handler(event, CONTEXT)
    assert result["statusCode"] == 404
    error_of(result)

    secret, _ = issue_key(store, "sam")
    event.update(path="/v1/models", httpMethod="GET", body=None, isBase64Encoded=False)
    event["headers"]["Authorization"] = f"Bearer {secret}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {secret}"]
    result = lambda_handler.handler(event, CONTEXT)
    assert result["statusCode"] == 200, body_of(result)
    assert [m["id"] for m in json.loads(body_of(result))["data"]] == ["my-gpt4-mini"]


def start_api_event(method: str, path: str, headers: dict | None = None, body: str | None = None) -> dict:
    """`sam local start-api`'s event for an HTTP API route: header case as sent, timeEpoch in seconds, plain body."""
    event = sam_event("start-api-http-api")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    if headers is not None:
        event["headers"] = {"Host": "127.0.0.1:3000", "X-Forwarded-Proto": "http", "X-Forwarded-Port": "3000",
                            **headers}
    event["body"] = body
    return event


@pytest.mark.parametrize("auth_name, type_name", [("Authorization", "Content-Type"),
                                                  ("AUTHORIZATION", "content-TYPE")])
def test_sam_start_api_streamed_request_answers_whole(lambda_handler, store, auth_name, type_name):
    secret, _ = issue_key(store, "sam", rpm=10)
    event = start_api_event("POST", "/v1/chat/completions", {auth_name: f"Bearer {secret}",
                                                             type_name: "application/json"},
                            json.dumps({**CHAT, "stream": True}))
    assert event["requestContext"]["timeEpoch"] < 10**10  # seconds, as SAM sends it
    result = lambda_handler.handler(event, CONTEXT)
    assert result["statusCode"] == 200, body_of(result)
    assert result["headers"]["content-type"].startswith("text/event-stream")
    events = sse_events(body_of(result))
    assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "chat.completion.chunk"
    assert result["headers"]["x-ratelimit-remaining-requests"] == "9"


def test_sam_start_api_plain_body_errors_and_every_route(lambda_handler, store):
    secret, _ = issue_key(store, "sam")
    auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    # a plain (not base64) body that is not JSON is the client's 400, not a decoding accident
    result = lambda_handler.handler(start_api_event("POST", "/v1/chat/completions", auth, "{not json"), CONTEXT)
    assert result["statusCode"] == 400
    assert error_of(result)["type"] == "invalid_request_error"
    # the key is read whatever the header's case
    result = lambda_handler.handler(start_api_event("GET", "/v1/models", {"authorization": "Bearer nope"}), CONTEXT)
    assert result["statusCode"] == 401
    for path in ("/v1/models", "/models"):
        result = lambda_handler.handler(start_api_event("GET", path, auth), CONTEXT)
        assert result["statusCode"] == 200, (path, body_of(result))
    assert json.loads(body_of(lambda_handler.handler(start_api_event("GET", "/health", {}), CONTEXT))) == {
        "status": "ok"}
    openapi = lambda_handler.handler(start_api_event("GET", "/openapi.json", {}), CONTEXT)
    assert openapi["statusCode"] == 200 and "/v1/chat/completions" in json.loads(body_of(openapi))["paths"]
    assert lambda_handler.handler(start_api_event("GET", "/v1/nothing-here", auth), CONTEXT)["statusCode"] == 404
