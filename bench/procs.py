"""Processes of a benchmark run: start, pin, stop, and what the OS says they cost.

CPU is read from ``/proc/<pid>/stat`` (``utime + stime``, every thread of the
process, in clock ticks: 10 ms each at the usual ``CLK_TCK`` of 100), memory
from ``/proc/<pid>/status`` (``VmRSS``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aisix.local.ports import free_port  # noqa: F401  (re-exported for the bench)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # After "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), in seconds."""
    user, system = cpu_split(pid)
    return user + system


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def pin(pid: int, cores: set[int] | None) -> None:
    """Pin a process (all its threads) to ``cores`` (what ``taskset -a -p`` does)."""
    if not cores:
        return
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), cores)
    except OSError:
        os.sched_setaffinity(pid, cores)



def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@dataclass
class Proc:
    """A child process of the run, its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: str | None = None
    cores: set[int] | None = None
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> "Proc":
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        pin(self.popen.pid, self.cores)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return
            except OSError as exc:
                if getattr(exc, "code", None):  # an HTTP error status is an answer
                    return
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 8.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


class Meter:
    """CPU of several processes (and this one) over an interval."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "load generator": os.getpid()}
        self.cpu0: dict[str, tuple[float, float]] = {}
        self.cpu1: dict[str, tuple[float, float]] = {}
        self.t0 = self.t1 = 0.0

    def start(self) -> "Meter":
        self.cpu0 = {name: _split_or_zero(pid) for name, pid in self.pids.items()}
        self.t0 = time.monotonic()
        return self

    def stop(self) -> "Meter":
        self.t1 = time.monotonic()
        self.cpu1 = {name: _split_or_zero(pid) for name, pid in self.pids.items()}
        return self

    def cpu(self, name: str) -> float:
        return self.user(name) + self.system(name)

    def user(self, name: str) -> float:
        return self.cpu1[name][0] - self.cpu0[name][0]

    def system(self, name: str) -> float:
        return self.cpu1[name][1] - self.cpu0[name][1]

    @property
    def wall(self) -> float:
        return self.t1 - self.t0

    def utilization(self) -> dict[str, float]:
        return {name: self.cpu(name) / self.wall if self.wall > 0 else 0.0 for name in self.pids}


def _split_or_zero(pid: int) -> tuple[float, float]:
    try:
        return cpu_split(pid)
    except OSError:
        return 0.0, 0.0


def python() -> str:
    return sys.executable
