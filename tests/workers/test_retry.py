"""The retry policy alone: attempts, "not yet", Retry-After, backoff and the story's TTL."""

from __future__ import annotations

import pytest

from workers.delivery import Outcome, Result
from workers.retry import Retry, RetryPolicy

NOW = 1_000_000.0
LATER = NOW + 3600


def policy(**kwargs) -> RetryPolicy:
    return RetryPolicy(random=lambda: 0.5, **kwargs)  # no jitter: the middle of the range


def test_a_failed_attempt_counts_and_backs_off_exponentially():
    server_error = Result(Outcome.RETRY, "http_500", 500)
    assert policy().decide(server_error, 0, NOW, LATER) == Retry(5.0, 1)
    assert policy().decide(server_error, 2, NOW, LATER) == Retry(20.0, 3)
    assert policy(max_delay=30).decide(server_error, 3, NOW, LATER) == Retry(30.0, 4)


def test_the_last_attempt_gives_up_with_the_reason():
    timeout = Result(Outcome.RETRY, "timeout", origin="fcm")
    result = policy(max_attempts=3).decide(timeout, 2, NOW, LATER)
    assert (result.outcome, result.reason, result.origin) == (Outcome.FAILED, "timeout_gave_up", "fcm")
    assert not result.refusal  # a timeout never counts against the subscription


def test_not_yet_costs_no_attempt_however_often_it_happens():
    throttled = Result(Outcome.RETRY, "throttled", retry_after=120.0, attempted=False)
    assert policy(max_attempts=2).decide(throttled, 1, NOW, LATER) == Retry(120.0, 1)
    circuit = Result(Outcome.RETRY, "circuit_open", retry_after=15.0, attempted=False)
    assert policy(max_attempts=1).decide(circuit, 0, NOW, LATER) == Retry(15.0, 0)


def test_retry_after_is_honoured_for_attempts_too():
    unavailable = Result(Outcome.RETRY, "http_503", 503, retry_after=42.0)
    assert policy().decide(unavailable, 0, NOW, LATER) == Retry(42.0, 1)


def test_nothing_is_retried_past_the_stories_ttl():
    throttled = Result(Outcome.RETRY, "throttled", retry_after=120.0, attempted=False)
    result = policy().decide(throttled, 0, NOW, NOW + 100)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "ttl_expired")


def test_jitter_stays_within_its_bounds():
    low = RetryPolicy(random=lambda: 0.0).backoff(2)
    high = RetryPolicy(random=lambda: 0.999999).backoff(2)
    assert low == pytest.approx(5.0) and high == pytest.approx(15.0, rel=1e-5)


def test_bad_values_fail_when_built():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.5)
