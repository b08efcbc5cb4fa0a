"""``python -m aisix.local.lambda_emulator``, unchanged, plus a side port for the benchmark.

The emulator records every HTTP chunk the runtime process writes to the runtime API
(each ASGI body message of the app is one chunk) with its arrival time. That is the
gateway's own writes on the Lambda path, so the benchmark reads them here to check
that no two upstream events ever share a write, and to time each chunk at the point
where Lambda's service takes over (before the function URL front door relays it).
The emulator keeps the first MiB of each stream served through its function URL
(``RECORD_LIMIT``), far more than the benchmark's streams; a longer one is reported with
``"complete": false``.

    python -m bench.lambda_emulator --stats-port 4000 -- --port 3001 --app handler:app

``GET http://127.0.0.1:<stats-port>/?last=N`` answers, for the last N finished
invocations, ``[{"events_per_chunk": [...], "partial_chunks": n, "stamps": [[at_ns, sent_ns], ...]}]``
(``at_ns``: CLOCK_MONOTONIC of the chunk's arrival; ``sent_ns``: the upstream's stamp
in the chunk, see bench/fast_upstream.py); with ``&first=1`` only the first stamp of each.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from aisix.local import lambda_emulator as em

STAMP = re.compile(rb'"content":" (\d+)@(\d+)"')
DELIMITER = b"\x00" * 8
_instances: list[Any] = []
_original_init = em.RuntimeAPIEmulator.__init__


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    _instances.append(self)


em.RuntimeAPIEmulator.__init__ = _init  # type: ignore[method-assign]


def describe(invocation: Any, first_only: bool = False) -> dict[str, Any]:
    events, partial, stamps = [], 0, []
    seen_prelude = False
    for chunk in invocation.chunks:
        data = chunk.data
        if not seen_prelude:
            head, found, rest = data.partition(DELIMITER)
            if not found:
                continue
            seen_prelude, data = True, rest
            if not data:
                continue
        events.append(data.count(b"\n\n"))
        if not data.endswith(b"\n\n"):
            partial += 1
        at_ns = int(chunk.at * 1e9)
        stamps += [[at_ns, int(m.group(2))] for m in STAMP.finditer(data)]
        if first_only and stamps:
            return {"stamps": stamps[:1]}
    if first_only:
        return {"stamps": stamps[:1]}
    return {"events_per_chunk": events, "partial_chunks": partial, "stamps": stamps, "complete": invocation.complete}


class Stats(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        query = parse_qs(urlparse(self.path).query)
        last = int(query.get("last", ["1"])[0])
        first_only = query.get("first", ["0"])[0] == "1"
        found = []
        if _instances:
            finished = [i for i in list(_instances[0].invocations.values()) if i.finished.is_set()]
            found = [describe(i, first_only) for i in finished[-last:]]
        payload = json.dumps(found).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def main(argv: list[str]) -> int:
    if "--stats-port" not in argv or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[argv.index("--stats-port") + 1])
    rest = argv[argv.index("--") + 1 :]
    server = ThreadingHTTPServer(("127.0.0.1", port), Stats)
    threading.Thread(target=server.serve_forever, name="bench-stats", daemon=True).start()
    return em.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
