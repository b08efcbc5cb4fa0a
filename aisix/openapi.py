"""The gateway's own OpenAPI description, served at ``GET /openapi.json``.

It describes exactly what the gateway checks, no more: a request body must be
a JSON object with a non-empty string ``model``, a non-empty array of
``messages`` that are objects with a string ``role``, and ``stream`` a boolean
or null. Every other field is passed to the upstream untouched, so the
document leaves them open (the upstream may still refuse them, with its own
4xx). `tests/test_fuzz.py` fuzzes the running gateway against this document
(schemathesis), so a change to the validation in `aisix.app` must change it too.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR}}}
    if headers:
        response["headers"] = headers
    return response


_RATE_HEADERS = {
    name: {"schema": {"type": "string"}, "description": "Present for keys with that limit."}
    for name in (
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    )
}

_KEY_ERRORS = {
    "401": _error_response("Missing, malformed, unknown or revoked API key (code `invalid_api_key`)."),
    "431": _error_response("Request headers larger than the gateway accepts."),
    "503": _error_response("The key store (DynamoDB) cannot be reached: keys fail closed."),
}


def _chat_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "OpenAI chat completions, streamed (text/event-stream) or not.",
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
        },
        "responses": {
            "200": {
                "description": "The upstream's answer: a chat completion, or with `stream: true` an event "
                "stream of chunks ending with `data: [DONE]` (a failure after the first byte is a last "
                "`data: {\"error\": ...}` event and no `[DONE]`).",
                "headers": {
                    "x-aisix-overhead-ms": {"schema": {"type": "string"}, "description": "Gateway time before "
                                            "the upstream call."},
                    **_RATE_HEADERS,
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}},
                },
            },
            "400": _error_response("Malformed JSON, invalid UTF-8, empty body, or a missing or wrong "
                                   "`model`, `messages` or `stream`; or the upstream's own 400."),
            "403": _error_response("The key may not use this model (code `model_not_allowed`)."),
            "404": _error_response("Unknown model (code `model_not_found`)."),
            "413": _error_response("Body larger than `AISIX_MAX_BODY_BYTES` (code `request_too_large`)."),
            "415": _error_response("A content type that is not JSON."),
            "422": _error_response("The upstream's own refusal of the request."),
            "429": _error_response(
                "Rate limited here (type `requests` or `tokens`) or by the upstream.",
                {"retry-after": {"schema": {"type": "string"}}, **_RATE_HEADERS},
            ),
            "502": _error_response("The upstream is unreachable, failed, refused the gateway's credentials "
                                   "or answered nonsense (code `upstream_error`)."),
            "504": _error_response("The upstream timed out (code `upstream_timeout`)."),
            **_KEY_ERRORS,
            "4XX": _error_response("Another refusal by the upstream, with its status and error fields."),
        },
    }


def _models_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "The models the calling key may use.",
        "security": [{"bearer": []}],
        "responses": {
            "200": {
                "description": "OpenAI's model list.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}},
            },
            **_KEY_ERRORS,
        },
    }


_SCHEMAS: dict[str, Any] = {
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model alias from the models file "
                      "(exact match, case included)."},
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {"description": "Passed through; the gateway adds `include_usage` upstream and "
                               "shows the usage chunk only to clients that asked for it."},
        },
        "additionalProperties": True,
        "description": "Fields other than `model`, `messages` and `stream` are passed to the upstream untouched.",
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string"},
            "content": {"description": "Passed through to the upstream unchecked."},
        },
        "additionalProperties": True,
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        },
    },
    "StreamEvent": {
        "description": "One event of a streamed answer: a chunk, then `[DONE]`; or, after a failure, an "
        "error (and no `[DONE]`). Keep-alive comments (`: keep-alive`) may come in between.",
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [
                        {"$ref": "#/components/schemas/ChatCompletionChunk"},
                        {"$ref": "#/components/schemas/Error"},
                    ]},
                },
            },
        },
    },
    "ChatCompletionChunk": {
        "type": "object",
        "required": ["choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"const": "model"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AISIX",
            "version": "0.1.0",
            "description": "An OpenAI-compatible LLM gateway. Errors always have OpenAI's shape "
            "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.",
        },
        "paths": {
            "/v1/chat/completions": {"post": _chat_operation("createChatCompletion")},
            "/chat/completions": {"post": _chat_operation("createChatCompletionUnversioned")},
            "/v1/models": {"get": _models_operation("listModels")},
            "/models": {"get": _models_operation("listModelsUnversioned")},
            "/health": {
                "get": {
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "The gateway is up (no key needed).",
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            }}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "This document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
    }
