"""A function URL front door for the emulator (InvokeMode RESPONSE_STREAM).

Each HTTP request becomes a payload 2.0 event shaped like a function URL's with auth
type NONE; the runtime's streamed answer is relayed to the client as it arrives: the
prelude becomes the status line and headers, each later chunk is written through.
Between the two sits the invocation's `Pipe`: a client that reads slowly fills it, and
then the emulator stops reading the runtime, whose writes stall (flow control, as on AWS);
what one stream holds here stays bounded whatever its length.

Like AWS, it does not tell the runtime when the client goes away, unless
`propagate_disconnect` is set: then it cuts the runtime's connection, which is how a
broken stream reaches the app (useful to test that the app cancels its work).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import parse_qsl

import h11

from .lambda_invocation import Invocation
from .lambda_wire import DELIMITER, reason_phrase

MAX_PRELUDE = 16 * 1024  # Lambda wants the prelude within the first 16 KB
TEXT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "+json",
    "+xml",
)
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class Invoker(Protocol):
    """What the front door needs of the emulator (kept structural: no import back)."""

    def invoke(self, event: dict[str, Any], *, relay: bool = ...) -> Invocation: ...

    def sever(self, invocation: Invocation) -> None: ...


def function_url_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str,
    url_id: str,
    region: str,
    request_id: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The event a function URL with auth NONE sends: no authorizer, `accountId: anonymous`,
    and `cookies`, `queryStringParameters`, `body` left out when empty."""
    now = time.time() if now is None else now
    path, _, query = target.partition("?")
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
        else:
            merged[name] = f"{merged[name]},{value}" if name in merged else value
    domain = f"{url_id}.lambda-url.{region}.on.aws"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": url_id,
            "domainName": domain,
            "domainPrefix": url_id,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    if params:
        event["queryStringParameters"] = params
    if body:
        content_type = merged.get("content-type", "").lower()
        try:
            if not any(t in content_type for t in TEXT_TYPES):
                raise UnicodeDecodeError("utf-8", body, 0, 0, "binary content type")
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


class FunctionURL:
    def __init__(
        self,
        emulator: Invoker,
        *,
        propagate_disconnect: bool = False,
        url_id: str = "aisixlocalfunctionurlxxxxxxxxxxx",
        region: str = "us-east-1",
    ) -> None:
        self.emulator = emulator
        self.propagate_disconnect = propagate_disconnect
        self.url_id = url_id
        self.region = region
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        return bound_host, bound_port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.transport.abort()
            await self._server.wait_closed()
            if self._handlers:  # let each connection's handler unwind before the loop stops
                await asyncio.wait(list(self._handlers), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        conn = h11.Connection(h11.SERVER)
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        try:
            while True:
                received = await _read_request(conn, reader, writer)
                if received is None:
                    return
                request, body = received
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw_items()]
                headers += [
                    ("x-forwarded-for", peer[0]),
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-port", str(writer.get_extra_info("sockname")[1])),
                ]
                event = function_url_event(
                    request.method.decode(),
                    request.target.decode(),
                    headers,
                    body,
                    source_ip=peer[0],
                    url_id=self.url_id,
                    region=self.region,
                    request_id=str(uuid.uuid4()),
                )
                invocation = self.emulator.invoke(event, relay=True)
                if not await _Relay(self, invocation, conn, reader, writer).run():
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        except asyncio.CancelledError:  # the server is closing; nothing left to answer
            return
        finally:
            self._connections.discard(writer)
            writer.close()


class _Relay:
    """Relays one invocation's answer to the HTTP client."""

    def __init__(
        self,
        front: FunctionURL,
        invocation: Invocation,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.front, self.invocation = front, invocation
        self.conn, self.reader, self.writer = conn, reader, writer
        self.client_gone = False

    async def run(self) -> bool:
        """True if the connection can serve another request."""
        hangup = asyncio.ensure_future(self.reader.read(1))
        hangup.add_done_callback(self._on_hangup)
        try:
            return await self._relay()
        finally:
            if self.invocation.pipe is not None:
                self.invocation.pipe.abandon()  # whatever happens here, never stall the runtime
            if not hangup.done():
                hangup.cancel()
                await asyncio.wait({hangup})  # a read still waiting would block the next one
            elif not hangup.cancelled() and hangup.exception() is None and hangup.result():
                self.conn.receive_data(hangup.result())  # the start of a pipelined request

    async def _relay(self) -> bool:
        head = bytearray()
        started = False
        pipe = self.invocation.pipe
        assert pipe is not None, "invoked with relay=True"
        while True:
            data = await pipe.get()
            if data is None:
                break
            if started:
                await self._send(h11.Data(data=data))
                continue
            head += data
            prelude, found, rest = bytes(head).partition(DELIMITER)
            if not found:
                if len(head) > MAX_PRELUDE:
                    return await self._bad_gateway()
                continue
            status, headers = _from_prelude(json.loads(prelude))
            await self._send(h11.Response(status_code=status, headers=headers, reason=reason_phrase(status)))
            started = True
            if rest:
                await self._send(h11.Data(data=rest))

        invocation = self.invocation
        if self.client_gone:
            return False
        if invocation.outcome == "response" and invocation.streamed:
            if not started:
                return await self._bad_gateway()
            await self._send(h11.EndOfMessage())
            return not self.client_gone
        if invocation.outcome == "response":
            status, headers, body = _from_buffered(invocation.body)
            await self._send(
                h11.Response(
                    status_code=status,
                    headers=[*headers, ("content-length", str(len(body)))],
                    reason=reason_phrase(status),
                )
            )
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
            return not self.client_gone
        if started:  # the stream failed: leave the client a truncated body, as a broken stream does
            self.writer.transport.abort()
            return False
        return await self._bad_gateway()

    async def _send(self, event: Any) -> None:
        if self.client_gone:
            return
        try:
            self.writer.write(self.conn.send(event))
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._client_left()

    async def _bad_gateway(self) -> bool:
        body = b'{"Message":"Internal Server Error"}'
        await self._send(
            h11.Response(
                status_code=502,
                reason=b"Bad Gateway",
                headers=[
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                    ("connection", "close"),
                ],
            )
        )
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())
        return False

    def _on_hangup(self, task: asyncio.Future[bytes]) -> None:
        if not task.cancelled() and (task.exception() is not None or not task.result()):
            self._client_left()

    def _client_left(self) -> None:
        if not self.client_gone:
            self.client_gone = True
            if self.front.propagate_disconnect:
                self.front.emulator.sever(self.invocation)


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        else:
            return None


def _from_prelude(prelude: dict[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    headers = [(k, str(v)) for k, v in (prelude.get("headers") or {}).items() if k.lower() not in _FRAMING]
    headers += [("set-cookie", c) for c in prelude.get("cookies") or []]
    headers.append(("date", formatdate(usegmt=True)))
    return int(prelude.get("statusCode", 200)), headers


def _from_buffered(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """A buffered result, read the way a function URL reads one."""
    try:
        result = json.loads(raw)
    except ValueError:
        result = None
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, [("content-type", "application/json")], raw
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() not in _FRAMING]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(name, str(v)) for v in values]
    headers += [("set-cookie", c) for c in result.get("cookies") or []]
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return int(result["statusCode"]), headers, data
