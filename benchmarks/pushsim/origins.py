"""One push-service origin (one port) and the ways a real push service misbehaves on it.

Plain state with no I/O, like `state.py`: the handler consults it on every push, the
control API changes it, and the server opens and closes the origin's listening socket.
Every check a healthy origin pays for is one attribute test, so a misbehaving origin
costs the others nothing.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from benchmarks.pushsim.state import Recorder, Subscriber

# What a throttled or failing push service answers instead of 201; any other status is a
# test asking for something no push service does.
_ANSWER_STATUSES = range(400, 600)
# How an origin may frame its answers besides the usual Content-Length (`Response.encode`,
# and the server's `_flood`).
FRAMINGS = ("close", "stall", "flood")


class Throttle:
    """A token bucket: `per_second` tokens a second, at most `burst` saved up; starts full.

    Written here rather than taken from a rate-limiting library because a push service
    answers at once (it never makes a sender wait), the count must be exact for tests, and
    it runs on every push of a throttled origin; `limits` has no token bucket and
    `aiolimiter` waits for capacity instead of refusing.
    """

    __slots__ = ("_tokens", "_updated", "burst", "per_second", "retry_after", "status")

    def __init__(self, per_second: float, burst: int | None, retry_after: str | None, status: int) -> None:
        if isinstance(per_second, bool) or not (math.isfinite(per_second) and per_second > 0):
            raise ValueError("per_second must be a positive number")
        if burst is None:
            burst = max(1, int(per_second))
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError("burst must be an integer >= 1")
        if status not in _ANSWER_STATUSES:
            raise ValueError("status must be a 4xx or 5xx HTTP status (429, 503 or 406 as push services use)")
        if retry_after is not None and retry_after != "date" and not retry_after.isdigit():
            raise ValueError("retry_after must be delay-seconds (digits), 'date' or None")
        self.per_second = float(per_second)
        self.burst = burst
        self.retry_after = retry_after
        self.status = status
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def take(self) -> bool:
        """Take a token if there is one: True lets the push through."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def retry_after_header(self) -> str | None:
        """The Retry-After value: seconds as given, or an RFC 9110 IMF-fixdate >= 1 s ahead."""
        if self.retry_after == "date":
            # HTTP dates have whole seconds: round up so the date is never less than 1 s away.
            return email.utils.formatdate(math.ceil(time.time()) + 1, usegmt=True)
        return self.retry_after

    def to_json(self) -> dict:
        return {
            "per_second": self.per_second,
            "burst": self.burst,
            "retry_after": self.retry_after,
            "status": self.status,
        }


def check_failure(status: object) -> int | str | None:
    """Validate a `fail_origin` status: an HTTP error status, 'drop', or None to clear."""
    if status is None or status == "drop":
        return status  # type: ignore[return-value]
    if isinstance(status, bool) or not isinstance(status, int) or status not in _ANSWER_STATUSES:
        raise ValueError("status must be a 4xx/5xx HTTP status, 'drop' or None")
    return status


def check_framing(framing: object) -> str | None:
    """Validate a `framing` style: one of FRAMINGS, or None for Content-Length framing."""
    if framing is not None and framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)} or None")
    return framing  # type: ignore[return-value]


@dataclass(eq=False)
class Origin:
    """One push service on one port: its subscribers, records and misbehaviour.

    `url` is set once the server has bound the port.
    """

    index: int
    seq: Iterator[int]
    url: str = ""
    latency_s: float = 0.0
    # σ of a log-normal factor on latency_s (0: every answer takes exactly latency_s): real
    # push services' answers spread, a tail of slow ones around a typical delay.
    latency_spread: float = 0.0
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    recorder: Recorder = field(init=False)
    # Misbehaviour, cleared by `calm()`:
    hanging: bool = False  # read requests, never answer them
    failure: int | str | None = None  # answer every push with this status, or "drop"
    throttle: Throttle | None = None
    refused: bool = False  # not listening (the server closes the socket)
    early_hints: bool = False  # a 1xx (103 Early Hints) before every push's answer, as RFC 9110 allows
    framing: str | None = None  # push answers framed by connection close, a body that stalls, or a header without end

    def __post_init__(self) -> None:
        self.recorder = Recorder(self.url, self.seq)

    def delay(self) -> float:
        """Seconds before a push's answer: `latency_s`, or a log-normal draw whose median it is."""
        if not self.latency_spread:
            return self.latency_s
        return self.latency_s * random.lognormvariate(0.0, self.latency_spread)

    @property
    def authority(self) -> str:
        return self.url.removeprefix("https://")

    def bind(self, url: str) -> None:
        """Name the origin once its port is known."""
        self.url = url
        self.recorder.origin = url

    def forget(self) -> None:
        """Drop every record (subscribers and misbehaviour stay)."""
        self.recorder = Recorder(self.url, self.seq)

    def calm(self) -> None:
        """Stop misbehaving (the server reopens a refused port itself)."""
        self.hanging = False
        self.failure = None
        self.throttle = None
        self.early_hints = False
        self.framing = None

    def misbehaviour(self) -> dict:
        """What the origin is doing wrong, for `stats()` and debugging."""
        return {
            "hanging": self.hanging,
            "failure": self.failure,
            "throttle": None if self.throttle is None else self.throttle.to_json(),
            "refused": self.refused,
            "early_hints": self.early_hints,
            "framing": self.framing,
            "latency_ms": self.latency_s * 1000,
            "latency_spread": self.latency_spread,
        }
