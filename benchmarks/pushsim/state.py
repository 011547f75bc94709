"""What the simulator remembers: subscribers, scripted faults and every request's outcome.

Plain data with no I/O, owned by one `PushHandler` on the server's event loop, so no locks.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

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
    """A request not delivered: failed a check, hit a scripted fault, or was dropped."""

    token: str
    status: int | None
    reason: str
    received_at: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return {"token": self.token, "status": self.status, "reason": self.reason, "received_at": self.received_at}


@dataclass
class Recorder:
    """Everything observed since the last reset, in arrival order."""

    messages: list[Message] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    faulted: int = 0
    dropped: int = 0
    decrypted: int = 0
    decrypt_errors: int = 0

    def reject(self, token: str, status: int | None, reason: str, *, fault: bool = False) -> None:
        self.rejections.append(Rejection(token, status, reason))
        self.reasons[reason] += 1
        if status is None:
            self.dropped += 1
        else:
            self.by_status[status] += 1
        if fault:
            self.faulted += 1

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "delivered": len(self.messages),
            "rejected": len(self.rejections) - self.faulted - self.dropped,
            "faulted": self.faulted,
            "dropped": self.dropped,
            "decrypted": self.decrypted,
            "decrypt_errors": self.decrypt_errors,
            "reasons": dict(self.reasons.most_common()),
        }
