"""Subscriptions in Redis: a packed record per integer id, topic bitmaps, endpoint index.

Integer ids make each topic index a bitmap (one bit per subscriber per topic)
and let a campaign cut its audience into id ranges. Writes that touch several
keys run as one Lua script so two browsers racing on one endpoint can never
create two subscriptions, and a crash never leaves an index half-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from ..subscriptions import Subscription, endpoint_digest, pack, unpack
from . import keys
from .rate_limit import OVER_LIMIT_LUA, RateSlot

# KEYS: bucket, seq, count, client rate counter, new-subscription ceiling counter.
# ARGV: field, packed, sub prefix, topic prefix, n, topics..., flags..., client limit, client ttl,
# ceiling limit, ceiling ttl (a limit of 0: none).
# The client's rate limit is counted in the same call (one round trip per subscribe), and
# the global ceiling only when the endpoint is new: updates never count towards it.
_UPSERT_BODY = """
local n = tonumber(ARGV[5])
if over_limit(KEYS[4], ARGV[6 + 2 * n], ARGV[7 + 2 * n]) then return {-1, 0} end
local id = redis.call('HGET', KEYS[1], ARGV[1])
local created = 0
if not id then
  if over_limit(KEYS[5], ARGV[8 + 2 * n], ARGV[9 + 2 * n]) then return {-2, 0} end
  id = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[1], id)
  redis.call('INCR', KEYS[3])
  created = 1
end
redis.call('SET', ARGV[3] .. id, ARGV[2])
for i = 1, n do
  redis.call('SETBIT', ARGV[4] .. ARGV[5 + i], id, tonumber(ARGV[5 + n + i]))
end
return {tonumber(id), created}
"""
_UPSERT = OVER_LIMIT_LUA + _UPSERT_BODY

# KEYS: bucket, count. ARGV: field, sub prefix, topic prefix, failure prefix, topics...
_DELETE = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', ARGV[2] .. id, ARGV[4] .. id)
for i = 5, #ARGV do redis.call('SETBIT', ARGV[3] .. ARGV[i], id, 0) end
redis.call('DECR', KEYS[2])
return tonumber(id)
"""

# Delete by id, but only if the record still is the one the caller saw (a
# rotated subscription keeps its id with a new endpoint and must survive).
# KEYS: sub key, bucket, count. ARGV: expected packed, field, topic prefix, failure key, topics...
_DELETE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local id = string.sub(KEYS[1], string.find(KEYS[1], '[0-9]+$'))
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1], ARGV[4])
for i = 5, #ARGV do redis.call('SETBIT', ARGV[3] .. ARGV[i], id, 0) end
redis.call('DECR', KEYS[3])
return 1
"""

# Move the old endpoint's id to the new endpoint (keeping the id keeps it in any
# campaign audience already snapshotted, so a rotation mid-send loses nothing).
# KEYS: old bucket, new bucket, count. ARGV: old field, new field, packed, sub prefix,
# topic prefix, failure prefix, n, topics..., flags...
_CHANGE = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return -1 end
local n = tonumber(ARGV[7])
local other = redis.call('HGET', KEYS[2], ARGV[2])
if other and other ~= id then
  redis.call('DEL', ARGV[4] .. other, ARGV[6] .. other)
  for i = 1, n do redis.call('SETBIT', ARGV[5] .. ARGV[7 + i], other, 0) end
  redis.call('DECR', KEYS[3])
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], id)
redis.call('SET', ARGV[4] .. id, ARGV[3])
redis.call('DEL', ARGV[6] .. id)
for i = 1, n do
  redis.call('SETBIT', ARGV[5] .. ARGV[7 + i], id, tonumber(ARGV[7 + n + i]))
end
return tonumber(id)
"""


class SubscriptionStore:
    """Upsert, look up, rotate and remove subscriptions; count them by topic."""

    def __init__(self, client: redis.Redis, topic_ids: Sequence[str]):
        self.client = client
        self.topic_ids = tuple(topic_ids)
        self._upsert = client.register_script(_UPSERT)
        self._delete = client.register_script(_DELETE)
        self._delete_if_unchanged = client.register_script(_DELETE_IF_UNCHANGED)
        self._change = client.register_script(_CHANGE)

    def _flags(self, topics: Iterable[str]) -> list[int]:
        chosen = set(topics)
        return [1 if topic in chosen else 0 for topic in self.topic_ids]

    def upsert(
        self,
        subscription: Subscription,
        *,
        rate: RateSlot | None = None,
        ceiling: RateSlot | None = None,
        pipe: redis.client.Pipeline | None = None,
    ) -> tuple[int, bool] | None:
        """Store `subscription` keyed by its endpoint. Returns (id, created), or
        None when the call was queued on `pipe` (bulk loads).

        Args:
            rate: the calling client's limit, counted for every call.
            ceiling: the limit on new subscriptions across all clients, counted only
                when the endpoint is new (so a botnet cannot inflate ids without bound).

        Raises:
            RateLimited: over `rate` or `ceiling` (nothing was written).
        """
        bucket, field = keys.endpoint_bucket(subscription.endpoint_digest)
        unlimited = (keys.SUBSCRIPTION_SEQ, 0, 0)  # a key is still needed; limit 0 never touches it
        rate_key, rate_limit, rate_ttl = (rate.key, rate.limit, rate.ttl) if rate else unlimited
        new_key, new_limit, new_ttl = (ceiling.key, ceiling.limit, ceiling.ttl) if ceiling else unlimited
        result = self._upsert(
            keys=[bucket, keys.SUBSCRIPTION_SEQ, keys.SUBSCRIPTION_COUNT, rate_key, new_key],
            args=[
                field,
                pack(subscription),
                keys.SUBSCRIPTION_PREFIX,
                keys.TOPIC_PREFIX,
                len(self.topic_ids),
                *self.topic_ids,
                *self._flags(subscription.topics),
                rate_limit,
                rate_ttl,
                new_limit,
                new_ttl,
            ],
            client=pipe,
        )
        if pipe is not None:
            return None
        id_, created = result
        if id_ < 0:
            refused = rate if id_ == -1 else ceiling
            assert refused is not None
            raise refused.refusal()
        return int(id_), bool(created)

    def id_for(self, endpoint: str) -> int | None:
        bucket, field = keys.endpoint_bucket(endpoint_digest(endpoint))
        raw = self.client.hget(bucket, field)
        return int(raw) if raw is not None else None

    def get(self, id_: int) -> Subscription | None:
        raw = self.client.get(keys.subscription(id_))
        return unpack(raw) if raw is not None else None

    def get_many(self, ids: Sequence[int]) -> list[Subscription | None]:
        """Records for `ids` in one round trip; None where one was removed."""
        if not ids:
            return []
        raws = self.client.mget([keys.subscription(i) for i in ids])
        return [unpack(raw) if raw is not None else None for raw in raws]

    def get_by_endpoint(self, endpoint: str) -> tuple[int, Subscription] | None:
        id_ = self.id_for(endpoint)
        if id_ is None:
            return None
        record = self.get(id_)
        return (id_, record) if record is not None else None

    def delete(self, endpoint: str) -> int | None:
        """Remove the subscription at `endpoint`; returns its id, None if unknown."""
        bucket, field = keys.endpoint_bucket(endpoint_digest(endpoint))
        id_ = self._delete(
            keys=[bucket, keys.SUBSCRIPTION_COUNT],
            args=[field, keys.SUBSCRIPTION_PREFIX, keys.TOPIC_PREFIX, keys.FAILURE_PREFIX, *self.topic_ids],
        )
        return int(id_) or None

    def delete_if_unchanged(self, id_: int, seen: Subscription) -> bool:
        """Remove subscription `id_` only if it still is `seen` (used when a push
        service says it expired: a rotation since then must not be undone)."""
        bucket, field = keys.endpoint_bucket(seen.endpoint_digest)
        return bool(
            self._delete_if_unchanged(
                keys=[keys.subscription(id_), bucket, keys.SUBSCRIPTION_COUNT],
                args=[pack(seen), field, keys.TOPIC_PREFIX, keys.failures(id_), *self.topic_ids],
            )
        )

    def change(self, old_endpoint: str, new: Subscription) -> int | None:
        """Rotate: the old endpoint's settings move to `new`'s endpoint and keys.

        Returns the id, or None when neither endpoint is known.
        """
        current = self.get_by_endpoint(old_endpoint)
        if current is None:
            return self.id_for(new.endpoint)  # a replay after the move already happened
        _, old = current
        moved = old.with_endpoint(new.endpoint, new.p256dh, new.auth)
        old_bucket, old_field = keys.endpoint_bucket(endpoint_digest(old_endpoint))
        new_bucket, new_field = keys.endpoint_bucket(moved.endpoint_digest)
        id_ = self._change(
            keys=[old_bucket, new_bucket, keys.SUBSCRIPTION_COUNT],
            args=[
                old_field,
                new_field,
                pack(moved),
                keys.SUBSCRIPTION_PREFIX,
                keys.TOPIC_PREFIX,
                keys.FAILURE_PREFIX,
                len(self.topic_ids),
                *self.topic_ids,
                *self._flags(moved.topics),
            ],
        )
        return int(id_) if int(id_) > 0 else self.id_for(new.endpoint)

    def count(self) -> int:
        return int(self.client.get(keys.SUBSCRIPTION_COUNT) or 0)

    def count_by_topic(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for topic in self.topic_ids:
            pipe.bitcount(keys.topic(topic))
        return dict(zip(self.topic_ids, (int(n) for n in pipe.execute()), strict=True))

    # -- permanent failures ------------------------------------------------------

    def failing(self, ids: Sequence[int]) -> set[int]:
        """Which of `ids` have a permanent-failure streak (so a success must clear it)."""
        if not ids:
            return set()
        raws = self.client.mget([keys.failures(i) for i in ids])
        return {i for i, raw in zip(ids, raws, strict=True) if raw is not None}

    def clear_failures(self, ids: Iterable[int]) -> None:
        names = [keys.failures(i) for i in ids]
        if names:
            self.client.delete(*names)

    def record_permanent_failure(
        self, id_: int, seen: Subscription, now: float, threshold: int = 3, window: float = 86400
    ) -> bool:
        """Count a 400/403/413-style refusal; delete the subscription only after
        `threshold` of them spread over at least `window` seconds with no success
        between, so a misconfigured key cannot wipe the audience in one campaign.

        Returns True if the subscription was deleted.
        """
        key = keys.failures(id_)
        raw = self.client.get(key)
        first, count = (float(raw.split(b":")[0]), int(raw.split(b":")[1])) if raw else (now, 0)
        count += 1
        self.client.set(key, f"{first}:{count}", ex=int(window * 7))
        if count >= threshold and now - first >= window:
            return self.delete_if_unchanged(id_, seen)
        return False
