"""The gateway's own OpenAPI description, served at ``GET /openapi.json``.

It describes exactly what the gateway checks on every call, no more: each
request schema is its dialect's ``validate`` (aisix/dialects/*.py) written as
JSON Schema. Every other field is left open: an OpenAI client calling an
OpenAI-compatible model has it passed to the upstream untouched (the upstream
may still refuse it, with its own 4xx); a call translated to another provider
reads it, and what that provider cannot express is a 400 naming the field
(documented as a 400 of each operation, not as a schema rule: it depends on
the model). `tests/test_fuzz.py` fuzzes the running gateway against this
document (schemathesis), so a change to a dialect's validation must change it too.

Errors have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``)
on every route but Anthropic's (``/v1/messages`` and below), which answers
``{"type": "error", "error": {"type", "message"}}`` as Anthropic's clients expect.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_ANTHROPIC_ERROR = {"$ref": "#/components/schemas/AnthropicError"}
_BEARER = [{"bearer": []}]
# Anthropic's clients send the key as x-api-key; Claude Code with ANTHROPIC_AUTH_TOKEN as a Bearer token.
_ANTHROPIC_SECURITY = [{"anthropicKey": []}, {"bearer": []}]


def _error_response(description: str, headers: dict[str, Any] | None = None, schema: Any = _ERROR) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
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
_ANSWER_HEADERS = {
    "x-aisix-overhead-ms": {"schema": {"type": "string"}, "description": "Gateway time before the upstream call."},
    **_RATE_HEADERS,
}


def _key_errors(schema: Any = _ERROR) -> dict[str, Any]:
    return {
        "401": _error_response("Missing, malformed, unknown or revoked API key (code `invalid_api_key`).",
                               schema=schema),
        "431": _error_response("Request headers larger than the gateway accepts.", schema=schema),
        "503": _error_response("The key store (DynamoDB) cannot be reached: keys fail closed.", schema=schema),
    }


def _call_errors(bad_request: str, schema: Any = _ERROR) -> dict[str, Any]:
    """The refusals of a call that reaches for a model: the gateway's own, then the upstream's."""
    return {
        "400": _error_response(
            "Malformed JSON, invalid UTF-8, empty body, or " + bad_request + "; a model whose provider cannot "
            "serve this endpoint (code `unsupported_model`); on a call translated to another provider, a field "
            "or content that provider cannot express (named in the message); or the upstream's own 400.",
            schema=schema,
        ),
        "403": _error_response("The key may not use this model (code `model_not_allowed`).", schema=schema),
        "404": _error_response("Unknown model (code `model_not_found`).", schema=schema),
        "413": _error_response("Body larger than `AISIX_MAX_BODY_BYTES` (code `request_too_large`).", schema=schema),
        "415": _error_response("A content type that is not JSON.", schema=schema),
        "422": _error_response("The upstream's own refusal of the request.", schema=schema),
        "429": _error_response(
            "Rate limited here (type `requests` or `tokens`) or by the upstream.",
            {"retry-after": {"schema": {"type": "string"}}, **_RATE_HEADERS},
            schema=schema,
        ),
        "502": _error_response("The upstream is unreachable, failed, refused the gateway's credentials "
                               "or answered nonsense (code `upstream_error`).", schema=schema),
        "504": _error_response("The upstream timed out (code `upstream_timeout`).", schema=schema),
        **_key_errors(schema),
        "4XX": _error_response("Another refusal by the upstream, with its status and error fields.", schema=schema),
    }


def _json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _chat_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "OpenAI chat completions, streamed (text/event-stream) or not.",
        "security": _BEARER,
        "requestBody": _json_body("ChatCompletionRequest"),
        "responses": {
            "200": {
                "description": "The answer: a chat completion, or with `stream: true` an event stream of chunks "
                "ending with `data: [DONE]` (a failure after the first byte is a last "
                "`data: {\"error\": ...}` event and no `[DONE]`).",
                "headers": _ANSWER_HEADERS,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}},
                },
            },
            **_call_errors("a missing or wrong `model`, `messages` or `stream`"),
        },
    }


def _responses_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "OpenAI Responses (Codex, the OpenAI Agents SDK), streamed or not. Stateless: nothing is stored.",
        "security": _BEARER,
        "requestBody": _json_body("ResponsesRequest"),
        "responses": {
            "200": {
                "description": "A `response` object, or with `stream: true` typed events (`event: <type>` and a "
                "`data:` object with `type` and `sequence_number`): `response.created` … "
                "`response.output_text.delta` … `response.completed` (with usage); a failure after the first byte "
                "is `response.failed`.",
                "headers": _ANSWER_HEADERS,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/ResponsesStreamEvent"}},
                },
            },
            **_call_errors("a missing or wrong `model`, `input` or `stream`; `previous_response_id`, "
                           "`conversation`, `store: true` or `background: true` (code `unsupported_parameter`: "
                           "the gateway stores no responses)"),
        },
    }


def _embeddings_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "OpenAI embeddings; usage is charged to the key's TPM.",
        "security": _BEARER,
        "requestBody": _json_body("EmbeddingsRequest"),
        "responses": {
            "200": {
                "description": "OpenAI's embeddings list (`float` vectors, or base64 little-endian float32 with "
                "`encoding_format: base64`).",
                "headers": _ANSWER_HEADERS,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsList"}}},
            },
            **_call_errors("a missing or wrong `model`, `input`, `encoding_format` or `dimensions`; token arrays "
                           "as `input` on a model whose provider is not OpenAI-compatible"),
        },
    }


def _models_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "The models the calling key may use.",
        "security": _BEARER,
        "responses": {
            "200": {
                "description": "OpenAI's model list.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}},
            },
            **_key_errors(),
        },
    }


def _model_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "One model, if the calling key may use it (the `openai` SDK's `models.retrieve`).",
        "security": _BEARER,
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "A model alias from the models file."}],
        "responses": {
            "200": {
                "description": "OpenAI's model object.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}},
            },
            "404": _error_response("No such model, or the key may not use it (code `model_not_found`)."),
            **_key_errors(),
        },
    }


_MESSAGES_RULES = "a missing or wrong `model`, `messages`, `max_tokens` or `stream` (worded as Anthropic words it)"

_MESSAGES_OPERATION = {
    "operationId": "createMessage",
    "summary": "Anthropic Messages (the Anthropic SDKs, Claude Code), streamed or not.",
    "security": _ANTHROPIC_SECURITY,
    "requestBody": _json_body("MessagesRequest"),
    "responses": {
        "200": {
            "description": "A `Message`, or with `stream: true` Anthropic's event stream (`event: message_start` … "
            "`content_block_delta` … `message_delta` (cumulative usage), `message_stop`, and `ping`); a failure "
            "after the first byte is `event: error`.",
            "headers": _ANSWER_HEADERS,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Message"}},
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/MessagesStreamEvent"}},
            },
        },
        **_call_errors(_MESSAGES_RULES, _ANTHROPIC_ERROR),
    },
}

_COUNT_TOKENS_OPERATION = {
    "operationId": "countMessageTokens",
    "summary": "Anthropic's token count: the provider's own count where it has one (Anthropic, Gemini), else an "
    "estimate. Free: no rate limit is taken and nothing is charged.",
    "security": _ANTHROPIC_SECURITY,
    "requestBody": _json_body("CountTokensRequest"),
    "responses": {
        "200": {
            "description": "The prompt's input tokens.",
            "content": {"application/json": {"schema": {
                "type": "object", "required": ["input_tokens"],
                "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
            }}},
        },
        **_call_errors("a missing or wrong `model` or `messages` (worded as Anthropic words it)", _ANTHROPIC_ERROR),
    },
}

_SCHEMAS: dict[str, Any] = {
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model alias from the models file "
                      "(exact match, case included)."},
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {"description": "Passed through; the gateway adds `include_usage` upstream and "
                               "shows the usage chunk only to clients that asked for it."},
        },
        "additionalProperties": True,
        "description": "Fields other than `model`, `messages` and `stream` are passed to an OpenAI-compatible "
        "upstream untouched; a call translated to another provider reads them.",
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string"},
            "content": {"description": "Passed through to an OpenAI-compatible upstream unchecked."},
        },
        "additionalProperties": True,
    },
    "ResponsesRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model alias from the models file."},
            "input": {"anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object"}, "description": "Input items (messages, "
                 "function_call and function_call_output items, ...): the whole conversation each turn."},
            ]},
            "stream": {"type": ["boolean", "null"]},
            "previous_response_id": {"type": "null", "description": "Refused: the gateway stores no responses."},
            "conversation": {"type": "null", "description": "Refused: the gateway stores no responses."},
            "store": {"not": {"const": True}, "description": "`true` is refused; left out, it means `false`."},
            "background": {"not": {"const": True}, "description": "`true` is refused."},
        },
        "additionalProperties": True,
    },
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model alias from the models file."},
            "input": {"anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1,
                                                           "items": {"type": "integer"}}},
            ]},
            "encoding_format": {"enum": ["float", "base64", None]},
            "dimensions": {"type": ["integer", "null"], "minimum": 1},
        },
        "additionalProperties": True,
    },
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model alias from the models file."},
            "messages": {"$ref": "#/components/schemas/AnthropicMessages"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": ["boolean", "null"]},
        },
        "additionalProperties": True,
        "description": "Passed to an Anthropic upstream as it came (model id and key swapped); translated for "
        "any other provider, where a field with no equivalent is a 400 naming it.",
    },
    "CountTokensRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A model alias from the models file."},
            "messages": {"$ref": "#/components/schemas/AnthropicMessages"},
        },
        "additionalProperties": True,
    },
    "AnthropicMessages": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["user", "assistant", "system"], "description": "`system` is moved into the "
                         "system prompt on a translated call (Anthropic itself refuses it)."},
                "content": {"anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {
                        "type": "object", "required": ["type"], "properties": {"type": {"type": "string"}},
                    }},
                ]},
            },
        },
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
    "ResponsesStreamEvent": {
        "description": "One typed event: `event: <type>` and a `data:` object with that `type` and a "
        "`sequence_number` counting from 0. Keep-alive comments (`: keep-alive`) may come in between.",
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "minLength": 1},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "type": "object",
                    "required": ["type", "sequence_number"],
                    "properties": {"type": {"type": "string"}, "sequence_number": {"type": "integer", "minimum": 0}},
                },
            },
        },
    },
    "MessagesStreamEvent": {
        "description": "One event of Anthropic's stream: `event: <type>` (`message_start`, `content_block_start`, "
        "`content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`, `ping`, `error`) and a "
        "`data:` object whose `type` repeats it. Keep-alive comments may come in between.",
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "minLength": 1},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
            },
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "status", "model", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"enum": ["completed", "incomplete", "failed"]},
            "model": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object", "required": ["type"]}},
            "usage": {"type": ["object", "null"]},
            "store": {"const": False},
        },
    },
    "EmbeddingsList": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer"},
                    "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
                },
            }},
            "model": {"type": "string"},
            "usage": {"type": ["object", "null"]},
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
            "model": {"type": "string"},
            "stop_reason": {"type": ["string", "null"]},
            "stop_sequence": {"type": ["string", "null"]},
            "usage": {
                "type": "object",
                "required": ["input_tokens", "output_tokens"],
                "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
            },
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
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
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "minLength": 1},
                    "message": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AISIX",
            "version": "0.1.0",
            "description": "An LLM gateway: OpenAI chat completions, Responses and embeddings, and Anthropic "
            "Messages, to OpenAI-compatible, Azure OpenAI, Anthropic, Bedrock and Gemini models. Errors have "
            "OpenAI's shape `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, except under "
            "`/v1/messages`: Anthropic's `{\"type\": \"error\", \"error\": {\"type\", \"message\"}}`.",
        },
        "paths": {
            "/v1/chat/completions": {"post": _chat_operation("createChatCompletion")},
            "/chat/completions": {"post": _chat_operation("createChatCompletionUnversioned")},
            "/v1/responses": {"post": _responses_operation("createResponse")},
            "/responses": {"post": _responses_operation("createResponseUnversioned")},
            "/v1/embeddings": {"post": _embeddings_operation("createEmbeddings")},
            "/embeddings": {"post": _embeddings_operation("createEmbeddingsUnversioned")},
            "/v1/messages": {"post": _MESSAGES_OPERATION},
            "/v1/messages/count_tokens": {"post": _COUNT_TOKENS_OPERATION},
            "/v1/models": {"get": _models_operation("listModels")},
            "/models": {"get": _models_operation("listModelsUnversioned")},
            "/v1/models/{model}": {"get": _model_operation("retrieveModel")},
            "/models/{model}": {"get": _model_operation("retrieveModelUnversioned")},
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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "anthropicKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
            "schemas": _SCHEMAS,
        },
    }
