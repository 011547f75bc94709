"""Per-client write limits: a fixed-window counter in Redis, shared by every web process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import keys


@dataclass(frozen=True)
class RateSlot:
    """The counter a client's write goes into, and what to tell it when over the limit."""

    key: str
    limit: int
    ttl: int
    retry_after: int

    @classmethod
    def current(cls, client_id: str, limit: int, window: int = 60) -> RateSlot:
        now = int(time.time())
        slot = now // window
        return cls(keys.rate_limit(client_id, slot), limit, window + 1, (slot + 1) * window - now or 1)
