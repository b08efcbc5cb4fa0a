"""A free port for a local server that no other process will take before the server binds it.

The usual trick (bind to port 0, read the port, close) draws from the kernel's
ephemeral range: the range every outgoing connection's local port and every
other "port 0" server draws from too. Between choosing the port and the server
binding it (a subprocess still importing), another process can take it; in the
busy test suite the benchmark's smoke run lost its ports that way now and then.
The kernel never hands out ports below that range by itself, so a port chosen
there at random and checked by binding can only be taken by another chooser
like this one, among thousands of ports.
"""

from __future__ import annotations

import random
import socket

FLOOR = 20000  # below: ports that people and other tools pick by hand (3000, 8000, 8080, ...)
_random = random.SystemRandom()  # not the `random` module's state, which test tools reseed alike in every worker


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(part) for part in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; elsewhere only a guess, still checked by binding


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, outside the kernel's ephemeral range when there is room."""
    low = ephemeral_range()[0]
    if low - FLOOR >= 1000:
        for _ in range(100):
            port = _random.randrange(FLOOR, low)
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # no room below the range: the usual trick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
