"""The counters behind `/metrics`: a batch's tally, histograms, the per-minute send rate."""

from __future__ import annotations

import pytest

from service.store.metrics_store import PushTally


def test_tally_counts_results_origins_and_buckets():
    tally = PushTally()
    tally.add("fcm", "sent", 0.01)  # on a bucket bound: counted in it
    tally.add("127.0.0.1:8443", "retry", 0.3, "http_429", 429)
    tally.add(None, "expired", None, "unsubscribed")
    tally.add("mozilla", "failed", 11.0, "http_403", 403)
    tally.add("apple", "retry", None, "circuit_open")  # deferred by its lane: no request, no duration
    assert tally.results == {
        ("sent", "fcm"): 1,
        ("retry", "127.0.0.1:8443"): 1,
        ("expired", "none"): 1,
        ("failed", "mozilla"): 1,
        ("retry", "apple"): 1,
    }
    assert tally.pushes == 3
    assert tally.durations == {"0.01": 1, "0.5": 1, "+Inf": 1}
    assert ("127.0.0.1:8443", "retry", "http_429", 429) in tally.problems


def test_histogram_is_cumulative_and_rate_is_a_sliding_minute(store):
    tally = PushTally()
    for elapsed in (0.005, 0.02, 0.02, 3.0):
        tally.add("fcm", "sent", elapsed)
    now = 1_800_000_030.0  # half-way through a minute
    store.metrics.record_pushes(tally, now=now - 60)  # previous minute: 4 pushes
    store.metrics.record_pushes(tally, now=now)  # this minute: 4 more
    histogram = store.metrics.push_durations()
    assert dict(histogram.buckets)["0.01"] == 2 and dict(histogram.buckets)["0.025"] == 6
    assert dict(histogram.buckets)["+Inf"] == histogram.count == 8
    assert histogram.sum == pytest.approx(2 * 3.045)
    assert store.metrics.send_rate(now=now) == pytest.approx((4 * 0.5 + 4) / 60)
    assert store.metrics.pushes() == {("sent", "fcm"): 8}
