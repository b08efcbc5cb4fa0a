"""Benchmark-only instrumentation, loaded by Python at start when this folder is on PYTHONPATH.

The benchmark puts ``bench/instrument`` on ``PYTHONPATH`` of the gateway processes it
starts (uvicorn, and the Lambda runtime loop through the emulator, which passes its
environment on). Nothing in ``aisix/`` knows about it. What it does, only when the
variable is set:

``AISIX_BENCH_DDB_COUNTS=<path>``
    Counts DynamoDB API calls (botocore ``before-call``, by operation) and HTTP
    attempts (``before-send``, retries included) of every botocore client the process
    creates, and writes them as JSON to ``<path>`` (atomically, at most every 0.2 s,
    only when they changed) from a daemon thread, so the measured process does no
    file I/O on its request path.

``AISIX_BENCH_WRITES=<path>``
    Records each SSE body the server writes to a client socket (uvicorn writes every
    ASGI ``http.response.body`` message with one ``transport.write``): its time, how many
    events it holds, whether it ends mid-event, and the upstream's send stamp of the
    chunk in it (bench/fast_upstream.py). Written as JSON to ``<path>`` like the counts.
    Only for the benchmark's chunk-merging check: it costs a little per chunk.

``AISIX_BENCH_NOFILE=1``
    Raises the soft open-files limit to the hard limit (thousands of streams).

``AISIX_BENCH_TRACEMALLOC=<path>``
    Traces allocations (10 frames) from start; each SIGUSR1 writes the live allocations,
    grouped by the innermost frame in aisix/ or a library (file:line, size, count) to
    ``<path>.<n>``: two dumps around opening N streams say what each stream keeps
    (bench/memory.py). Slows the process a lot: never on while timing.
"""

import os


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _count_dynamodb(path: str) -> None:
    import json
    import threading
    import time

    import botocore.session

    counts: dict = {"calls": {}, "sends": 0, "pid": os.getpid()}
    lock = threading.Lock()

    def on_call(model=None, **_kwargs):  # noqa: ANN001
        name = getattr(model, "name", "?")
        with lock:
            counts["calls"][name] = counts["calls"].get(name, 0) + 1

    def on_send(**_kwargs):  # noqa: ANN003
        with lock:
            counts["sends"] += 1

    original = botocore.session.Session.create_client

    def create_client(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-call", on_call)
        client.meta.events.register("before-send", on_send)
        return client

    botocore.session.Session.create_client = create_client

    def writer() -> None:
        last = None
        while True:
            with lock:
                snapshot = json.dumps(counts, sort_keys=True)
            if snapshot != last:
                tmp = f"{path}.tmp"
                with open(tmp, "w") as f:
                    f.write(snapshot)
                os.replace(tmp, path)
                last = snapshot
            time.sleep(0.2)

    threading.Thread(target=writer, name="bench-ddb-counts", daemon=True).start()


def _record_writes(path: str) -> None:
    import json
    import re
    import threading
    import time

    stamp = re.compile(rb'"content":" (\d+)@(\d+)"')
    writes: list = []  # [response id, monotonic ns, events, ends mid-event, upstream stamp ns]
    lock = threading.Lock()

    def wrap(cls) -> None:  # noqa: ANN001
        original = cls.send

        async def send(self, message):  # noqa: ANN001
            if message.get("type") == "http.response.body":
                body = message.get("body") or b""
                if body.startswith(b"data: "):
                    m = stamp.search(body)
                    with lock:
                        writes.append([id(self), time.monotonic_ns(), body.count(b"\n\n"),
                                       not body.endswith(b"\n\n"), int(m.group(2)) if m else 0])
            return await original(self, message)

        cls.send = send

    from uvicorn.protocols.http import h11_impl, httptools_impl

    wrap(httptools_impl.RequestResponseCycle)
    wrap(h11_impl.RequestResponseCycle)

    def writer() -> None:
        last = -1
        while True:
            with lock:
                n = len(writes)
                snapshot = json.dumps(writes) if n != last else None
            if snapshot is not None:
                tmp = f"{path}.tmp"
                with open(tmp, "w") as f:
                    f.write(snapshot)
                os.replace(tmp, path)
                last = n
            time.sleep(0.2)

    threading.Thread(target=writer, name="bench-writes", daemon=True).start()


def _tracemalloc(path: str) -> None:
    import signal
    import tracemalloc

    tracemalloc.start(10)
    dumps = [0]

    def dump(signum: int, frame: object) -> None:
        dumps[0] += 1
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        with open(f"{path}.{dumps[0]}.tmp", "w") as f:
            for stat in snapshot.statistics("traceback"):
                frames = list(stat.traceback)  # oldest first: [-1] is where the allocation happened
                ours = [fr for fr in frames if "/aisix/" in fr.filename]
                where = f"{frames[-1].filename}:{frames[-1].lineno}"
                caller = f"{ours[-1].filename}:{ours[-1].lineno}" if ours else "-"
                f.write(f"{stat.size}\t{stat.count}\t{where}\t{caller}\n")
        os.replace(f"{path}.{dumps[0]}.tmp", f"{path}.{dumps[0]}")

    signal.signal(signal.SIGUSR1, dump)


if os.environ.get("AISIX_BENCH_TRACEMALLOC"):
    _tracemalloc(os.environ["AISIX_BENCH_TRACEMALLOC"])
if os.environ.get("AISIX_BENCH_WRITES"):
    _record_writes(os.environ["AISIX_BENCH_WRITES"])
if os.environ.get("AISIX_BENCH_NOFILE"):
    _raise_nofile()
if os.environ.get("AISIX_BENCH_DDB_COUNTS"):
    _count_dynamodb(os.environ["AISIX_BENCH_DDB_COUNTS"])
