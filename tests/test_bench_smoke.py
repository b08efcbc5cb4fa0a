"""The benchmark runs end to end in its smoke mode. No timing is checked here: ever.

``python -m bench.run --smoke`` starts moto's server, the fast upstream, the gateway
(uvicorn, and the Lambda runtime through the emulator when it is there), the bare relay it is
compared with, and runs every section briefly (the sections with their own processes alongside). This only checks that it finishes and writes a results file with every
section, to a temporary path: bench/RESULTS.md is never touched. How long it takes is not
checked (a busy machine is slow); the time-out only stops a hang.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT))
from bench.run import SECTIONS  # noqa: E402


def failures_first(stdout: str) -> str:
    """The run's own list of failures, then the output's tail: the list is near the top of a long
    report, so a tail alone can hide why the run failed."""
    listed = stdout.split("**Failures in this run:**", 1)[1].split("\n\n", 2)[1] if "**Failures in this run:**" in stdout else ""
    return f"failures:\n{listed}\n---\n{stdout[-3000:]}"


def test_bench_smoke_runs_end_to_end(tmp_path: Path) -> None:
    results = ROOT / "bench" / "RESULTS.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, failures_first(proc.stdout) + proc.stderr[-4000:]
    text = out.read_text()
    for section in SECTIONS:
        assert f"## {section}\n" in text, f"section {section!r} missing"
        body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].strip()
        assert body, f"section {section!r} is empty"
        assert "did not run" not in body and "**failed:**" not in body, f"section {section!r}: {body[:500]}"
    assert "| what | target | measured |" in text
    assert "| | bare relay | AISIX | AISIX ÷ bare | target | |" in text  # issue 12: ratios to a bare relay
    assert (results.stat().st_mtime_ns if results.exists() else None) == before, "smoke run touched bench/RESULTS.md"


def test_smoke_refuses_the_default_results_file() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0
    assert "--out" in proc.stderr
