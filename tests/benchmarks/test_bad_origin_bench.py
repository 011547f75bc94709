"""`storypush bench --bad-origin`, run as an operator runs it, small: a healthy origin alone
and beside one that throttles or answers slowly (the hang scenario waits out the 10 s read
timeout, so it is left to the e2e tests)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "bench", "--subscribers", "120", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--bad-origin", "throttle", "--throttle-rate", "10"), r"throttling origin: 20 of 20 subscribers"),
        (("--bad-origin", "slow", "--slow-ms", "500"), r"slow origin \(500 ms an answer\): 20 of 20 subscribers"),
    ],
)
def test_the_bad_origin_bench_reports_the_healthy_origin_and_everyone_once(args, line):
    out = _bench(*args)
    assert "100 healthy + 20 bad subscribers" in out
    assert re.search(r"healthy origin beside it: +[0-9.]+ s +\([0-9.]+× alone; goal ≤ [0-9.]+ s: met\)", out), out
    assert re.search(line + r" got it exactly once in [0-9.]+ s.*failed 0$", out, re.M), out
