"""When a push that did not go through is tried again, and when it is given up.

In the spirit of rq's `Retry`: a small value object checked when built, so a bad
setting fails at start-up instead of mid-send. Two kinds of "not sent" are told apart:
an *attempt* that failed (a 5xx, a timeout, a reset) uses up one of the push's
`max_attempts`; a push the push service never took ("not yet": throttled, or its
origin's circuit open) costs nothing and is retried for as long as the story's TTL
allows, so nobody is lost to throttling.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .delivery import Outcome, Result


@dataclass(frozen=True, slots=True)
class Retry:
    """Send again in `delay` seconds; `attempts` is how many attempts the push has used."""

    delay: float
    attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    """Args:
    max_attempts: attempts (requests that failed as attempts) before a push fails.
    base_delay / max_delay: exponential backoff, `base_delay * 2**(attempts - 1)`, capped.
    jitter: each delay is scaled by a random factor in [1 - jitter, 1 + jitter], so a
        recovering push service is not hit in lockstep.
    """

    max_attempts: int = 5
    base_delay: float = 5.0
    max_delay: float = 300.0
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError("base_delay must be positive and at most max_delay")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def backoff(self, attempts: int) -> float:
        delay = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return delay * (1 - self.jitter + 2 * self.jitter * self.random())

    def decide(self, result: Result, attempts: int, now: float, expires_at: float) -> Result | Retry:
        """For a RETRY result: a `Retry`, or the FAILED result that ends the push.

        Args:
            attempts: attempts the push had used before this one.
            expires_at: when the story's TTL runs out; a retry later than that is pointless.
        """
        used = attempts + 1 if result.attempted else attempts
        if result.attempted and used >= self.max_attempts:
            return _failed(result, f"{result.reason}_gave_up")
        if result.retry_after is not None:
            delay = result.retry_after
        else:
            delay = self.backoff(used) if result.attempted else self.base_delay
        if now + delay > expires_at:
            return _failed(result, "ttl_expired")
        return Retry(delay, used)


def _failed(result: Result, reason: str) -> Result:
    return Result(Outcome.FAILED, reason, result.status, elapsed=result.elapsed, origin=result.origin)
