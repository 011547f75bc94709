"""`python -m benchmarks.connections` runs against the real simulator and reports both modes."""

from __future__ import annotations

import subprocess
import sys


def test_the_connection_benchmark_resumes_every_new_connection_in_its_resumed_mode_only():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.connections", "--connections", "20", "--rounds", "1", "--latency-ms", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # (One of the 20 goes out on the connection the first push opened: kept alive, not new.)
    assert "full handshake: " in done.stderr and "(0 of 20 connections resumed)" in done.stderr
    assert "resumed: " in done.stderr and "(19 of 20 connections resumed)" in done.stderr
    assert "resumed ÷ full:" in done.stdout
