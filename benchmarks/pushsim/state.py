"""What the simulator remembers: subscribers, scripted faults and every request's outcome.

Plain data with no I/O, owned by one `PushHandler` on the server's event loop, so no locks.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from benchmarks.pushsim.crypto import SubscriberKeys, b64url_encode


@dataclass(slots=True)
class Subscriber:
    """A subscription as the push service and the browser together know it."""

    token: str
    keys: SubscriberKeys
    application_server_key: bytes


@dataclass(slots=True)
class Fault:
    """Scripted answers for one token: `script` is consumed one POST at a time.

    `always` answers that status forever (e.g. 410 for an unsubscribed browser) once the
    script is empty; `drops` closes the connection without answering, first of all.
    """

    script: deque[int] = field(default_factory=deque)
    always: int | None = None
    retry_after: str | None = None
    drops: int = 0
    # what a faulted answer says beyond its status: the JSON body's "reason" (Apple's 429
    # "TooManyRequests" is about one device) and extra headers (WNS's X-WNS-Status)
    reason: str = "injected fault"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def next_action(self) -> int | str | None:
        """'drop', a status to answer, or None to handle the request normally."""
        if self.drops:
            self.drops -= 1
            return "drop"
        if self.script:
            return self.script.popleft()
        return self.always

    def is_spent(self) -> bool:
        return not (self.drops or self.script or self.always is not None)


@dataclass(slots=True)
class Message:
    """One accepted push: the plaintext (once decrypted) and what came with it."""

    seq: int  # simulator-wide arrival order, so records of several origins merge exactly
    origin: str
    token: str
    received_at: float
    ttl: int
    urgency: str | None
    topic: str | None
    claims: dict
    headers: dict[str, str]
    body_length: int
    plaintext: bytes | None = None
    decrypted: bool = False
    error: str | None = None
    # Kept only until a deferred decryption has run, then dropped to free memory.
    pending: tuple[bytes, SubscriberKeys] | None = None

    def to_json(self) -> dict:
        return {
            "origin": self.origin,
            "token": self.token,
            "received_at": self.received_at,
            "ttl": self.ttl,
            "urgency": self.urgency,
            "topic": self.topic,
            "claims": self.claims,
            "headers": self.headers,
            "body_length": self.body_length,
            "plaintext": None if self.plaintext is None else b64url_encode(self.plaintext),
            "decrypted": self.decrypted,
            "error": self.error,
        }


@dataclass(slots=True)
class Rejection:
    """A request not delivered: failed a check, hit a fault or a limit, was dropped or left hanging."""

    seq: int
    origin: str
    token: str
    status: int | None
    reason: str
    received_at: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return {
            "origin": self.origin,
            "token": self.token,
            "status": self.status,
            "reason": self.reason,
            "received_at": self.received_at,
        }


class Outcome(StrEnum):
    """Why a request was not delivered; each has its own counter in the stats."""

    REJECTED = "rejected"  # failed a check a strict push service makes
    FAULTED = "faulted"  # a scripted per-token fault or a failing origin answered it
    DROPPED = "dropped"  # connection reset, no answer
    THROTTLED = "throttled"  # over the origin's rate limit
    HUNG = "hung"  # read and never answered (the origin hangs)


@dataclass
class Recorder:
    """Everything one origin observed since the last reset, in arrival order.

    `seq` is shared by every origin's recorder (one counter per simulator), so the records
    of several origins merge back into the order they arrived in.
    """

    origin: str
    seq: Iterator[int]
    messages: list[Message] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    requests: int = 0
    decrypted: int = 0
    decrypt_errors: int = 0
    # Messages whose decryption was deferred and has not run yet (verify="deferred").
    pending: bool = False

    def reject(self, token: str, status: int | None, reason: str, outcome: Outcome = Outcome.REJECTED) -> None:
        self.rejections.append(Rejection(next(self.seq), self.origin, token, status, reason))
        self.reasons[reason] += 1
        if status is not None:
            self.by_status[status] += 1
        self.outcomes[outcome] += 1

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "by_status": Counter(self.by_status),
            "delivered": len(self.messages),
            **{outcome.value: self.outcomes[outcome] for outcome in Outcome},
            "decrypted": self.decrypted,
            "decrypt_errors": self.decrypt_errors,
            "reasons": Counter(self.reasons),
        }


def merge_stats(parts: list[dict]) -> dict:
    """Sum several `Recorder.stats()` (counters included) into one."""
    total: dict = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total[name] + value if name in total else value
    return total


def stats_json(stats: dict) -> dict:
    """`Recorder.stats()` as the control API answers it: statuses as strings, sorted."""
    return {
        **stats,
        "by_status": {str(status): n for status, n in sorted(stats["by_status"].items())},
        "reasons": dict(stats["reasons"].most_common()),
    }
