"""`storypush bench`'s ramp figure: how long a cold worker took to fill its core."""

from __future__ import annotations

import pytest

from benchmarks.fanout import ramp_of


def _samples(shares: list[float], step: float = 0.01) -> list[tuple[float, float]]:
    """(time, CPU seconds) every `step` s for a worker using `shares[i]` of a core in step i."""
    samples, cpu = [(100.0, 5.0)], 5.0
    for i, share in enumerate(shares):
        cpu += share * step
        samples.append((100.0 + (i + 1) * step, cpu))
    return samples


def test_the_ramp_ends_where_a_whole_window_is_busy_and_the_rest_is_measured_after_it():
    # 0.5 s at a third of a core, then 1 s at 95 %, then a 0.1 s idle tail.
    samples = _samples([1 / 3] * 50 + [0.95] * 100 + [0.0] * 10)
    ramp, after = ramp_of(samples)
    assert ramp == pytest.approx(0.5, abs=0.02)
    assert after == pytest.approx(0.95 * 1.0 / 1.1, abs=0.02)


def test_short_bursts_do_not_end_the_ramp_and_a_worker_never_busy_has_none():
    bursts = ([1.0] * 10 + [0.2] * 10) * 10  # 100 ms busy, 100 ms idle: 60 % over any 0.2 s
    assert ramp_of(_samples(bursts)) == (None, None)
    assert ramp_of(_samples([1.0] * 5)) == (None, None)  # shorter than one window
    assert ramp_of([]) == (None, None)
