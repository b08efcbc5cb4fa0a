"""Summaries of py-spy's raw (collapsed) stacks: where a gateway's busy CPU goes.

Each line of ``py-spy record --format raw`` is ``frame;frame;...;leaf count`` with
frames like ``function (package/module.py:line)``. The benchmark records with
``--gil``: a sample is the stack of the thread holding the GIL, so shares are of the
Python-level CPU of the process (event loop and DynamoDB threads alike); time in C
code that releases the GIL (socket syscalls, epoll) is not in them.
"""

from __future__ import annotations

import re
from collections import Counter

# Entry points every sample passes through: not worth a row.
ROOTS = ("aisix/cli.py", "aisix/__main__.py", "aisix/local/run.py", "aisix/lambda_runtime/")
FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _parse(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        frames_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for frame in frames_text.split(";"):
            m = FRAME.match(frame)
            frames.append((m.group(1), m.group(2)) if m else (frame, ""))
        stacks.append((frames, int(count)))
    return stacks


def package(path: str) -> str:
    """The package a frame's file belongs to: first path component, or the module name."""
    if not path:
        return "?"
    parts = path.replace("\\", "/").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if len(parts) > 1:
        return parts[0]
    name = parts[0]
    return name[:-3] if name.endswith(".py") else name


def _label(func: str, path: str) -> str:
    return f"`{func}` ({path})"


def summarize(text: str, unit_cost_us: float, unit: str, top: int = 12) -> list[str]:
    stacks = _parse(text)
    total = sum(n for _, n in stacks)
    if not total:
        return ["(no samples)"]
    self_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    incl_own: Counter[str] = Counter()
    for frames, n in stacks:
        func, path = frames[-1]
        self_fn[_label(func, path)] += n
        self_pkg[package(path)] += n
        for pkg in {package(p) for _, p in frames}:
            incl_pkg[pkg] += n
        for label in {_label(f, p) for f, p in frames if p.startswith(("aisix/", "handler.py")) and not p.startswith(ROOTS)}:
            incl_own[label] += n

    def row(label: str, count: int) -> str:
        share = count / total
        return f"| {label} | {share * 100:.1f}% | {share * unit_cost_us:.1f} µs |"

    out = [f"{total} samples.", "", f"| by package: self (leaf frame) | share | per {unit} | inclusive share |",
           "|---|---|---|---|"]
    for pkg, n in self_pkg.most_common(top):
        out.append(f"| {pkg} | {n / total * 100:.1f}% | {n / total * unit_cost_us:.1f} µs | "
                   f"{incl_pkg[pkg] / total * 100:.0f}% |")
    out += ["", f"| hottest functions (self) | share | per {unit} |", "|---|---|---|"]
    out += [row(label, n) for label, n in self_fn.most_common(top)]
    out += ["", f"| aisix code, inclusive (time in it and below) | share | per {unit} |", "|---|---|---|"]
    out += [row(label, n) for label, n in incl_own.most_common(top)]
    return out
