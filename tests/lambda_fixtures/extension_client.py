"""A stand-in runtime process for the spin-down tests: raw runtime and Extensions API calls.

    python -m tests.lambda_fixtures.extension_client <register|none> <exit|ignore> <marker file>

`register`: an internal extension for no events, its `/event/next` waiting in a thread (as
a runtime asks Lambda for SIGTERM). `exit`: on SIGTERM, write the marker and exit 0;
`ignore`: ignore SIGTERM. Then it waits on `/invocation/next`, where no event ever comes.
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
import threading
from types import FrameType


def call(
    method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()
    return response


def main(register: str, on_sigterm: str, marker: str) -> None:
    if on_sigterm == "exit":

        def leave(signum: int, frame: FrameType | None) -> None:
            with open(marker, "w") as fh:
                fh.write("SIGTERM")
            os._exit(0)

        signal.signal(signal.SIGTERM, leave)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if register == "register":
        answer = call("POST", "/2020-01-01/extension/register", b'{"events": []}', {"Lambda-Extension-Name": "spin"})
        assert answer.status == 200, answer.status
        identifier = answer.getheader("Lambda-Extension-Identifier") or ""
        headers = {"Lambda-Extension-Identifier": identifier}
        ready = threading.Thread(target=call, args=("GET", "/2020-01-01/extension/event/next", None, headers))
        ready.daemon = True
        ready.start()
    call("GET", "/2018-06-01/runtime/invocation/next")


if __name__ == "__main__":
    main(*sys.argv[1:4])
