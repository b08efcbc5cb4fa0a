"""The floor the gateway is measured against: a relay with no logic at all.

A raw ASGI callable (no Starlette, no middleware) in front of the same upstream, with
the client library the gateway's default transport is built on (aiohttp, one pooled
session), served the way ``python -m aisix serve`` is served (uvicorn, one worker, uvloop
+ httptools, access log off). It has no auth, no rate limit, no JSON parsing, no hooks,
no keep-alive comments, no usage: it forwards the request body and the upstream's
``authorization`` header, and writes each upstream read back as it comes.

What it still does, because a relay without it is broken rather than lean: it closes
the upstream response when the client goes away (uvicorn drops writes to a gone client
without raising, so a relay that does not watch would keep every orphaned stream open).

``python -m bench.bare_relay --port 3902 --upstream http://127.0.0.1:3901/v1``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import aiohttp

from aisix.local.mocks import read_body

PASSED_HEADERS = (b"content-type", b"content-length", b"cache-control")


class BareRelay:
    def __init__(self, upstream: str, max_connections: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["method"] == "GET":  # health
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        body = await read_body(receive)
        headers = {"content-type": "application/json"}
        for name, value in scope["headers"]:
            if name == b"authorization":
                headers["authorization"] = value.decode("latin-1")
        assert self.session is not None
        path = scope["path"].removeprefix("/v1")
        async with self.session.post(self.upstream + path, data=body, headers=headers) as resp:
            out = [(k.lower().encode(), v.encode()) for k, v in resp.headers.items() if k.lower().encode() in PASSED_HEADERS]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            watcher = asyncio.ensure_future(self._close_on_disconnect(receive, resp))
            try:
                async for data in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            except aiohttp.ClientError:
                pass  # closed under us: the client left
            finally:
                watcher.cancel()
            await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _close_on_disconnect(receive: Any, resp: aiohttp.ClientResponse) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        resp.close()

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self.max_connections), auto_decompress=False
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    with contextlib.suppress(Exception):
                        await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3902)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL, e.g. http://127.0.0.1:3901/v1")
    parser.add_argument("--max-connections", type=int, default=1000)
    args = parser.parse_args()
    uvicorn.run(BareRelay(args.upstream, args.max_connections), host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
