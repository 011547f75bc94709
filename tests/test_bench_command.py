"""`storypush bench` as a user runs it: the installed console script, from outside the repo.

Only that the benchmark runs end to end and accounts for every push; its speed figures are
reported by the benchmark itself, never asserted by a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STORYPUSH = Path(sys.executable).with_name("storypush")


def test_bench_runs_from_any_directory_and_reports_every_sender(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(STORYPUSH), "bench", "--subscribers", "300", "--latency-ms", "0", "--sample", "5", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("\n{") :])
    pushes = {figure["sender"]: figure["pushes"] for figure in report["figures"]}
    assert pushes == {
        "storypush": 300,
        "pywebpush send_async (200)": 300,
        "pywebpush send_async (1000)": 300,
        "plain webpush() loop": 5,
    }
    assert set(report["ratios"]["0"]) == {"core", "best_send_async", "vs_send_async", "vs_loop", "cpu_vs_floor"}
    assert set(report["goals"]["0"]) == {"core", "vs_send_async", "vs_loop", "cpu_vs_floor"}
    storypush = next(figure for figure in report["figures"] if figure["sender"] == "storypush")
    assert 0 < storypush["core"] <= 1.05  # the worker's CPU share while it sent
    assert report["crypto"]["encrypt_s"] > 0
    assert "ratios (storypush ÷ other" in done.stdout
