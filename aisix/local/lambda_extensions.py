"""The Extensions API of the emulated Lambda: enough for a runtime's internal extension.

A runtime that registers an extension (even one subscribed to no events) is sent SIGTERM
at spin-down and gets 500 ms to clean up; without one, Lambda kills it with SIGKILL. The
rules follow AWS's documentation and its runtime interface emulator (`rapi/handler`):

* `POST /2020-01-01/extension/register` (header `Lambda-Extension-Name`, body
  `{"events": [...]}`) answers 200 with `Lambda-Extension-Identifier` and
  `{"functionName", "functionVersion", "handler"}`. Registration closes when the runtime
  is ready (its first `/invocation/next` or `/restore/next`): later, 403
  `Extension.RegistrationClosed`. An extension not named in `external` is internal (started
  by the runtime process) and may subscribe to `INVOKE` only, `SHUTDOWN` is refused with 403
  `Extension.InvalidEventType`.
* `GET /2020-01-01/extension/event/next` (header `Lambda-Extension-Identifier`) blocks until
  an event for that extension: `INVOKE` per invocation if subscribed, `SHUTDOWN` at spin-down
  if subscribed; one subscribed to nothing waits until the environment is gone.
* Init completes when the runtime and every registered extension have called their `next`:
  the first invocation is held back until then, as Lambda does.

Not modelled: the invoke phase waiting for INVOKE subscribers, the Telemetry and Logs APIs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import h11

from .lambda_wire import EXTENSION, Exchange, api_error, request_header, unless_hangup

NAME = "Lambda-Extension-Name"
IDENTIFIER = "Lambda-Extension-Identifier"
EVENT_IDENTIFIER = "Lambda-Extension-Event-Identifier"
ACCEPT_FEATURE = "Lambda-Extension-Accept-Feature"
ERROR_TYPE = "Lambda-Extension-Function-Error-Type"
MAX_EXTENSIONS = 10
EVENTS = ("INVOKE", "SHUTDOWN")


@dataclass(eq=False)
class Extension:
    name: str
    identifier: str
    events: tuple[str, ...]
    internal: bool
    ready: bool = False  # it has called /event/next at least once
    received: list[dict[str, Any]] = field(default_factory=list)  # events handed to it
    errors: list[dict[str, Any]] = field(default_factory=list)  # /init/error and /exit/error
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue, repr=False)


class ExtensionsAPI:
    def __init__(
        self,
        *,
        function_name: str,
        function_version: str = "$LATEST",
        handler: str = "handler.handler",
        account_id: str = "000000000000",
        external: frozenset[str] = frozenset(),
    ) -> None:
        self.metadata = {"functionName": function_name, "functionVersion": function_version, "handler": handler}
        self.account_id = account_id
        self.external = external  # names of external extensions (files in /opt/extensions)
        self.extensions: dict[str, Extension] = {}  # by identifier
        self.registration_open = True
        self._ready = asyncio.Event()
        self._ready.set()

    def close_registration(self) -> None:
        self.registration_open = False

    async def wait_ready(self) -> None:
        """Until every registered extension has called /event/next (the end of init)."""
        await self._ready.wait()

    def invoke(self, request_id: str, deadline_ms: int, function_arn: str, trace_id: str) -> None:
        event = {
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": function_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id},
        }
        self._send("INVOKE", event)

    def shutdown(self, reason: str, deadline_ms: int) -> None:
        self._send("SHUTDOWN", {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms})

    def _send(self, kind: str, event: dict[str, Any]) -> None:
        for extension in self.extensions.values():
            if kind in extension.events:
                extension.queue.put_nowait(event)

    async def route(self, request: h11.Request, ex: Exchange) -> bool | None:
        """Serve an Extensions API request; None if `request` is not one."""
        method, target = request.method.decode(), request.target.decode()
        if not target.startswith(f"{EXTENSION}/"):
            return None
        if method == "POST" and target == f"{EXTENSION}/register":
            return await self._register(request, ex)
        if method == "GET" and target == f"{EXTENSION}/event/next":
            return await self._next(request, ex)
        if method == "POST" and target in (f"{EXTENSION}/init/error", f"{EXTENSION}/exit/error"):
            return await self._error(request, ex, target.rsplit("/", 2)[1])
        return await ex.respond(404, api_error("Not found", "NotFound"), close=True)

    async def _register(self, request: h11.Request, ex: Exchange) -> bool:
        body = await ex.read_body() or b""
        name = request_header(request, NAME)
        if not name:
            return await _forbidden(ex, "Extension.InvalidExtensionName", "Empty extension name")
        try:
            parsed = json.loads(body)
            events = parsed.get("events") or []
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise ValueError("events must be a list of strings")
        except (ValueError, AttributeError) as exc:
            return await _forbidden(ex, "InvalidRequestFormat", str(exc))
        internal = name not in self.external
        for event in events:
            if event not in EVENTS:
                return await _forbidden(ex, "Extension.InvalidEventType", f"{event}: ErrorInvalidEventType")
            if internal and event == "SHUTDOWN":
                return await _forbidden(
                    ex, "Extension.InvalidEventType", f"{event}: ShutdownEventNotSupportedForInternalExtension"
                )
        if not self.registration_open:
            return await _forbidden(ex, "Extension.RegistrationClosed", "Extension registration closed already")
        if any(e.name == name for e in self.extensions.values()):
            return await _forbidden(
                ex, "Extension.InvalidExtensionState", "Extension with this name already registered"
            )
        if len(self.extensions) >= MAX_EXTENSIONS:
            return await _forbidden(
                ex, "Extension.TooManyExtensions", f"Extension limit ({MAX_EXTENSIONS}) reached"
            )
        extension = Extension(name, str(uuid.uuid4()), tuple(dict.fromkeys(events)), internal)
        self.extensions[extension.identifier] = extension
        self._ready.clear()
        answer = dict(self.metadata)
        if "accountId" in (request_header(request, ACCEPT_FEATURE) or ""):
            answer["accountId"] = self.account_id
        return await ex.respond(200, answer, headers=[(IDENTIFIER, extension.identifier)])

    def _find(self, request: h11.Request) -> Extension | tuple[str, str]:
        identifier = request_header(request, IDENTIFIER)
        if not identifier:
            return "Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header"
        try:
            uuid.UUID(identifier)
        except ValueError:
            return "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier"
        extension = self.extensions.get(identifier)
        if extension is None:
            return "Extension.UnknownExtensionIdentifier", f"Unknown extension {identifier}"
        return extension

    async def _next(self, request: h11.Request, ex: Exchange) -> bool:
        await ex.read_body()
        found = self._find(request)
        if not isinstance(found, Extension):
            return await _forbidden(ex, *found)
        extension = found
        if not extension.ready:
            extension.ready = True
            if all(e.ready for e in self.extensions.values()):
                self._ready.set()
        task, left = await unless_hangup(ex.reader, extension.queue.get())
        if task.cancelled():
            return False
        event = task.result()
        if left:
            extension.queue.put_nowait(event)  # not delivered: keep it for the next call
            return False
        extension.received.append(event)
        headers = [(IDENTIFIER, extension.identifier), (EVENT_IDENTIFIER, str(uuid.uuid4()))]
        return await ex.respond(200, event, headers=headers)

    async def _error(self, request: h11.Request, ex: Exchange, kind: str) -> bool:
        body = await ex.read_body() or b""
        found = self._find(request)
        if not isinstance(found, Extension):
            return await _forbidden(ex, *found)
        error_type = request_header(request, ERROR_TYPE)
        if not error_type:
            return await _forbidden(ex, "Extension.MissingHeader", f"Missing {ERROR_TYPE} header")
        try:
            detail: Any = json.loads(body)
        except ValueError:
            detail = body.decode("latin-1")
        found.errors.append({"kind": kind, "type": error_type, "body": detail, "at": time.time()})
        return await ex.respond(202, {"status": "OK"}, headers=[(IDENTIFIER, found.identifier)])


async def _forbidden(ex: Exchange, error_type: str, message: str) -> bool:
    return await ex.respond(403, api_error(message, error_type))
