"""The one rate limiter: fixed-window counters in Redis, shared by every web process.

One rule for every limit (browser writes per client, failed token checks per
client, new subscriptions across all clients): a window's counter is created by
its first hit, expires a second after its window ends, and a hit over the limit
is refused with the seconds left in the window. The rule is one Lua function,
run on its own (`RateLimiter.hit`) and inside the subscription upsert script, so
a subscribe still costs one round trip and both places count the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from ..errors import RateLimited
from . import keys

# Lua: count a hit on KEYS-style `key`; true when it goes over `limit` (0 or less: no limit).
OVER_LIMIT_LUA = """
local function over_limit(key, limit, ttl)
  limit = tonumber(limit)
  if limit <= 0 then return false end
  local hits = redis.call('INCR', key)
  if hits == 1 then redis.call('EXPIRE', key, ttl) end
  return hits > limit
end
"""

# KEYS: counter. ARGV: limit, ttl.
_HIT = OVER_LIMIT_LUA + "return over_limit(KEYS[1], ARGV[1], ARGV[2]) and 1 or 0"


@dataclass(frozen=True)
class RateSlot:
    """The counter a hit goes into, and what to tell the caller when it is over the limit."""

    key: str
    limit: int
    ttl: int
    retry_after: int
    message: str = "too many requests; try again later"

    @classmethod
    def current(
        cls, scope: str, subject: str, limit: int, window: int = 60, now: float | None = None, message: str = ""
    ) -> RateSlot:
        """This window's slot of `scope` (api, auth, ...) for `subject` (a client, or "all")."""
        now_s = int(time.time() if now is None else now)
        slot = now_s // window
        retry_after = (slot + 1) * window - now_s or 1
        return cls(keys.rate_limit(scope, subject, slot), limit, window + 1, retry_after, message or cls.message)

    def refusal(self) -> RateLimited:
        return RateLimited(self.message, retry_after=self.retry_after)


class RateLimiter:
    """Counts hits against `RateSlot`s."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._hit = client.register_script(_HIT)

    def hit(self, slot: RateSlot) -> None:
        """Count one hit.

        Raises:
            RateLimited: this hit went over the slot's limit.
        """
        if self._hit(keys=[slot.key], args=[slot.limit, slot.ttl]):
            raise slot.refusal()

    def check(self, slot: RateSlot) -> None:
        """Refuse, without counting, when earlier hits in this window used up the limit
        (for failures counted after the fact: a client that used up its wrong guesses
        gets no answer for its next one either, right or wrong).

        Raises:
            RateLimited: the limit is used up until the window ends.
        """
        if slot.limit > 0 and int(self.client.get(slot.key) or 0) >= slot.limit:
            raise slot.refusal()
