"""A mock Amazon Bedrock Runtime (Converse and ConverseStream), for tests and local runs. NOT a model.

Speaks the wire format of the Bedrock Runtime API reference and botocore's
``bedrock-runtime`` service model:

* ``POST /model/{modelId}/converse``: ``{"output": {"message": {...}}, "stopReason",
  "usage", "metrics"}``;
* ``POST /model/{modelId}/converse-stream``: ``application/vnd.amazon.eventstream``
  frames (``messageStart``, ``contentBlockStart`` for tool use, ``contentBlockDelta``,
  ``contentBlockStop``, ``messageStop``, ``metadata``), each payload padded with a
  ``"p"`` field as Bedrock pads them;
* errors as Bedrock sends them: ``{"message"}`` with ``x-amzn-ErrorType``.

Every request must carry ``Authorization``: a well-formed SigV4 one
(``AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/bedrock/aws4_request, SignedHeaders=...,
Signature=...``) whose scope date matches ``x-amz-date``, or a Bedrock API key
(``Bearer ...``). Given the secret key, the mock also recomputes the signature
with botocore, as AWS would, and refuses a mismatch (403 InvalidSignatureException).

Steered by a directive anywhere in the request's text: ``#mock key=value ...`` with
``words=N``, ``delay=SECONDS`` (between stream events), ``args=<base64url JSON>`` (the tool call's input instead of the default), ``tool=NAME`` (a call to NAME
with ``{"city": "Paris"}``, streamed in fragments), ``fail_after=N`` (after N
events, a ``modelStreamErrorException`` frame), ``status=CODE`` (refused with
Bedrock's error for that status; 429 carries ``Retry-After: 7``), ``usage=0``.

The frame encoder is dev code written from the AWS event stream specification
(botocore has only a decoder): a 12-byte prelude (total length, headers length,
CRC32 of those 8 bytes), headers (name length, name, type 7 = string, value
length, value), the payload, and a CRC32 of everything before it. Tests check it
by decoding its output with botocore's ``EventStreamBuffer``.

Run it alone with ``python -m aisix.local.mocks.bedrock --port 8082``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import struct
import zlib
from typing import Any
from urllib.parse import unquote

from ..mock_upstream import STORY, serve_lifespan
from . import after_tool_result, directive, echo_words, json_fragments, take_request, text_of, tool_arguments
SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/bedrock/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
ROUTE = re.compile(r"^/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream)$")
TOOL_ARGUMENTS = '{"city": "Paris"}'
ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


# -- the event stream encoder (from the spec; see the module docstring) -----------


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message with string headers (type 7)."""
    encoded = b""
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        encoded += struct.pack(">B", len(name_bytes)) + name_bytes
        encoded += struct.pack(">BH", 7, len(value_bytes)) + value_bytes
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, body: dict[str, Any]) -> bytes:
    # Bedrock pads each payload with "p" so its length does not tell the content.
    padded = {**body, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + len(event_type) % 20]}
    return encode_frame(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        json.dumps(padded, separators=(",", ":")).encode(),
    )


def exception_frame(exception_type: str, body: dict[str, Any]) -> bytes:
    return encode_frame(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        json.dumps(body, separators=(",", ":")).encode(),
    )


# -- the app ---------------------------------------------------------------------


class BedrockMock:
    """ASGI app; ``.requests`` records every request (method, path, query, headers, json)."""

    def __init__(self, secret_key: str | None = None, words: int = 8, delay: float = 0.0) -> None:
        self.secret_key = secret_key
        self.default_words = words
        self.default_delay = delay
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        raw, headers, _, body = await take_request(scope, receive, self.requests)
        route = ROUTE.match(scope.get("raw_path", scope["path"].encode()).decode())
        if scope["method"] != "POST" or route is None:
            await _error(send, 404, "UnknownOperationException", "Unknown operation.")
            return
        refused = self._auth_problem(scope, headers, raw)
        if refused is not None:
            await _error(send, 403, *refused)
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _error(send, 400, "ValidationException", "Malformed input request: messages is required.")
            return
        options = after_tool_result(directive(raw.decode(errors="replace")), _tool_result(body["messages"]))
        status = int(options.get("status", 0))
        if status:
            extra = [(b"retry-after", b"7")] if status == 429 else []
            await _error(send, status, ERROR_TYPES.get(status, "InternalServerException"),
                         f"mock failure {status}", extra)
            return
        answer = _answer(options, self.default_words, unquote(route["model"]), raw)
        if route["op"] == "converse":
            await _send_json(send, 200, _converse(answer, options))
        else:
            await self._stream(answer, options, send)

    def _auth_problem(self, scope: dict[str, Any], headers: dict[str, str], raw: bytes) -> tuple[str, str] | None:
        authorization = headers.get("authorization", "")
        if authorization.startswith("Bearer ") and authorization[7:].strip():
            return None
        if not authorization:
            return "MissingAuthenticationTokenException", "Missing Authentication Token"
        match = SIGV4.match(authorization)
        amz_date = headers.get("x-amz-date", "")
        if match is None or not amz_date.startswith(match["date"]):
            return "IncompleteSignatureException", "Authorization header requires a valid SigV4 Credential scope."
        signed = match["signed"].split(";")
        if not {"host", "x-amz-date"} <= set(signed) or any(name not in headers for name in signed):
            return "IncompleteSignatureException", "Signed headers must include host and x-amz-date."
        secret = self.secret_key
        if secret is not None and _signature(scope, headers, raw, match, secret) != match["signature"]:
            return ("InvalidSignatureException", "The request signature we calculated does not match the "
                    "signature you provided. Check your AWS Secret Access Key and signing method.")
        return None

    async def _stream(self, answer: dict[str, Any], options: dict[str, str], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/vnd.amazon.eventstream"), (b"x-amzn-requestid", b"mock-request")]})
        delay = float(options.get("delay", self.default_delay))
        fail_after = int(options["fail_after"]) if "fail_after" in options else None
        for count, frame in enumerate(_frames(answer, options)):
            if fail_after is not None and count >= fail_after:
                frame = exception_frame("modelStreamErrorException", {
                    "message": "The model failed mid-stream (mock).",
                    "originalStatusCode": 500, "originalMessage": "mock model failure"})
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                break
            if delay and count:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _tool_result(messages: list[Any]) -> str | None:
    """The text of the ``toolResult`` blocks the conversation ends with, if it ends with any."""
    last = messages[-1] if messages else None
    content = last.get("content") if isinstance(last, dict) else None
    results = [block["toolResult"] for block in content or [] if isinstance(block, dict) and "toolResult" in block]
    return " ".join(text_of(result.get("content")) for result in results) if results else None


def _answer(options: dict[str, str], default_words: int, model: str, raw: bytes) -> dict[str, Any]:
    count = int(options.get("words", default_words))
    words = echo_words(options["echo"]) if "echo" in options else (STORY * (1 + count // len(STORY)))[:count]
    arguments = tool_arguments(options)
    return {"words": words, "tool": options.get("tool"), "model": model,
            "input": json.loads(TOOL_ARGUMENTS) if arguments is None else arguments,
            "fragments": ('{"city"', ': "Par', 'is"}') if arguments is None else json_fragments(arguments),
            "input_tokens": len(raw) // 4 + 1, "output_tokens": len(words) + (8 if options.get("tool") else 0)}


def _usage(answer: dict[str, Any]) -> dict[str, int]:
    return {"inputTokens": answer["input_tokens"], "outputTokens": answer["output_tokens"],
            "totalTokens": answer["input_tokens"] + answer["output_tokens"]}


def _converse(answer: dict[str, Any], options: dict[str, str]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer["words"]:
        content.append({"text": " ".join(answer["words"])})
    if answer["tool"]:
        content.append({"toolUse": {"toolUseId": "tooluse_mock0001", "name": answer["tool"],
                                    "input": answer["input"]}})
    body: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "tool_use" if answer["tool"] else "end_turn",
        "metrics": {"latencyMs": 42},
    }
    if options.get("usage") != "0":
        body["usage"] = _usage(answer)
    return body


def _frames(answer: dict[str, Any], options: dict[str, str]) -> list[bytes]:
    frames = [event_frame("messageStart", {"role": "assistant"})]
    index = 0
    if answer["words"]:
        for n, word in enumerate(answer["words"]):
            frames.append(event_frame("contentBlockDelta", {
                "contentBlockIndex": index, "delta": {"text": word if n == 0 else " " + word}}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if answer["tool"]:
        frames.append(event_frame("contentBlockStart", {
            "contentBlockIndex": index,
            "start": {"toolUse": {"toolUseId": "tooluse_mock0001", "name": answer["tool"]}}}))
        for fragment in answer["fragments"]:
            frames.append(event_frame("contentBlockDelta", {
                "contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}}))
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(event_frame("messageStop", {"stopReason": "tool_use" if answer["tool"] else "end_turn"}))
    metadata: dict[str, Any] = {"metrics": {"latencyMs": 42}}
    if options.get("usage") != "0":
        metadata["usage"] = _usage(answer)
    frames.append(event_frame("metadata", metadata))
    return frames


def _signature(scope: dict[str, Any], headers: dict[str, str], raw: bytes, match: re.Match[str], secret: str) -> str:
    """The signature AWS would compute, with botocore's SigV4 (the reference implementation)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    path = scope.get("raw_path", scope["path"].encode()).decode()
    query = scope.get("query_string", b"").decode()
    url = f"{scope.get('scheme', 'http')}://{headers['host']}{path}" + (f"?{query}" if query else "")
    signed = {name: headers[name] for name in match["signed"].split(";")}
    request = AWSRequest(method=scope["method"], url=url, data=raw, headers=signed)
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(match["key"], secret, headers.get("x-amz-security-token")), "bedrock",
                       match["region"])
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)



async def _send_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = []) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"x-amzn-requestid", b"mock-request"), *headers]})
    await send({"type": "http.response.body", "body": data})


async def _error(send: Any, status: int, error_type: str, message: str,
                 headers: list[tuple[bytes, bytes]] = []) -> None:
    await _send_json(send, status, {"message": message}, [(b"x-amzn-errortype", error_type.encode()), *headers])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--secret-key", default=None, help="verify SigV4 signatures made with this secret")
    parser.add_argument("--words", type=int, default=8, help="words per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stream events")
    args = parser.parse_args()
    uvicorn.run(BedrockMock(secret_key=args.secret_key, words=args.words, delay=args.delay), host=args.host,
                port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
