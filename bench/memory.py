"""What one open stream keeps in the gateway's memory, by where it was allocated (tracemalloc).

``python -m bench.memory [--streams 200]``: moto, the fast upstream and a gateway with
``AISIX_BENCH_TRACEMALLOC`` (bench/instrument/sitecustomize.py); live allocations are dumped
before and while ``--streams`` slow streams are open, and the difference is printed per
allocation site and per aisix line that led to it, in bytes per stream. tracemalloc sees
Python's allocator only (not the kernel's socket buffers, nor C libraries' own malloc), so the
total is below the RSS growth `make bench` reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

from .load import connect
from .run import SMOKE, Context, Report, body, clean_env, start_gateway, start_tools, warm


def read_dump(path: Path) -> tuple[Counter[str], Counter[str]]:
    where: Counter[str] = Counter()
    caller: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        size, _, site, ours = line.split("\t")
        where[site] += int(size)
        caller[ours] += int(size)
    return where, caller


async def dump(pid: int, path: Path, n: int) -> Path:
    target = Path(f"{path}.{n}")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if target.exists():  # written under another name, then renamed
            return target
        await asyncio.sleep(0.1)
    raise RuntimeError("no tracemalloc dump")


async def main(streams: int, top: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="aisix-memory-"))
    ctx = Context(SMOKE, Report(SMOKE), tmp, clean_env(), False)
    trace = tmp / "trace"
    try:
        start_tools(ctx)
        proc, gw = start_gateway(ctx, "memory", AISIX_BENCH_TRACEMALLOC=str(trace), AISIX_MAX_OPEN_CALLS="0")
        await warm(ctx, gw, 20)
        raw = gw.request(body(True, chunks=1_000_000, pace_ms=100))
        await asyncio.sleep(1.0)
        before = read_dump(await dump(proc.pid, trace, 1))
        conns = []
        for _ in range(streams):
            conn = await connect("127.0.0.1", gw.port)
            conn.request(raw, sse=True)
            conns.append(conn)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(c.resp.first_event_ns for c in conns):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        after = read_dump(await dump(proc.pid, trace, 2))
        for title, i in (("allocation site", 0), ("aisix line that led to it", 1)):
            diff = after[i] - before[i]
            print(f"\n{title}: bytes per open stream ({streams} streams), total {sum(diff.values()) / streams:.0f}")
            for site, size in diff.most_common(top):
                print(f"{size / streams:8.0f}  {site.replace(str(Path.cwd()) + '/', '')}")
        for conn in conns:
            conn.close()
    finally:
        for p in reversed(list(ctx.procs.values())):
            p.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.top))
