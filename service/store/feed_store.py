"""Feeds in Redis: settings and status per feed, the entries each remembers, and poll slots.

Each feed has one live poll slot (`FEEDS_DUE`) and a lease while a worker polls it: a poll
runs only if its slot is still the feed's current one and it takes the lease, so neither a
duplicated job nor two workers can poll one feed at the same moment.

Remembered entries are bounded: an entry still in the feed is touched on every full read, one
gone from it for `ENTRY_RETENTION` is forgotten, and at most `MAX_ENTRIES` are kept per feed
(the least recently seen go first), so a feed that rotates its ids cannot grow a set forever.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from . import keys

ENTRY_RETENTION = 7 * 86400
MAX_ENTRIES = 5000
POLL_COUNTERS = ("polls_ok", "polls_not_modified", "polls_failed")

# KEYS: due set, lease. ARGV: feed id, slot, token, ttl.
# 1: claimed; 0: the slot is not current (stale job or feed removed); -1: another poll holds the lease.
_CLAIM = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) ~= tonumber(ARGV[2]) then return 0 end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4]) then return -1 end
return 1
"""

# KEYS: lease. ARGV: token. Only the holder releases.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: feed hash, due set. ARGV: feed id, slot (ms). Only for a feed that still exists.
_SET_SLOT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'next_poll_at', tonumber(ARGV[2]) / 1000)
return 1
"""

# KEYS: feed hash. ARGV: number of fields to set, field, value, ..., then field, increment, ...
# Never recreates a feed removed while it was being polled. Returns the consecutive failures.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
"""

# KEYS: seen set, titles hash. ARGV: forget entries last seen before this, keep at most this many.
_PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local excess = redis.call('ZCARD', KEYS[1]) - #gone - tonumber(ARGV[2])
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], #gone, #gone + excess - 1)) do table.insert(gone, id) end
end
for i = 1, #gone, 500 do
  local batch = {unpack(gone, i, math.min(i + 499, #gone))}
  redis.call('ZREM', KEYS[1], unpack(batch))
  redis.call('HDEL', KEYS[2], unpack(batch))
end
return #gone
"""


def new_feed_id() -> str:
    return "f" + secrets.token_hex(6)


def _float(fields: Mapping[str, str], name: str) -> float | None:
    raw = fields.get(name)
    return float(raw) if raw else None


@dataclass(frozen=True)
class Feed:
    """A feed's settings and status; `as_json()` is what the operator API shows."""

    id_: str
    url: str
    topics: tuple[str, ...]
    category_map: dict[str, str]
    every: int
    created_at: float
    title: str | None = None
    last_polled_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    entries_seen: int = 0
    stories: int = 0
    next_poll_at: float | None = None
    polls: dict[str, int] = field(default_factory=dict)
    # Private to polling: conditional-GET validators, and whether the first read happened.
    etag: str | None = None
    last_modified: str | None = None
    primed: bool = False

    @classmethod
    def from_redis(cls, feed_id: str, raw: Mapping[bytes, bytes]) -> Feed:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id_=feed_id,
            url=fields["url"],
            topics=tuple(json.loads(fields.get("topics", "[]"))),
            category_map=json.loads(fields.get("category_map", "{}")),
            every=int(fields["every"]),
            created_at=float(fields["created_at"]),
            title=fields.get("title") or None,
            last_polled_at=_float(fields, "last_polled_at"),
            last_success_at=_float(fields, "last_success_at"),
            last_error=fields.get("last_error") or None,
            last_error_at=_float(fields, "last_error_at"),
            failures=int(fields.get("failures", 0)),
            entries_seen=int(fields.get("entries_seen", 0)),
            stories=int(fields.get("stories", 0)),
            next_poll_at=_float(fields, "next_poll_at"),
            polls={name: int(fields.get(name, 0)) for name in POLL_COUNTERS},
            etag=fields.get("etag") or None,
            last_modified=fields.get("last_modified") or None,
            primed=fields.get("primed") == "1",
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id_,
            "url": self.url,
            "topics": list(self.topics),
            "category_map": dict(self.category_map),
            "every": self.every,
            "last_polled_at": self.last_polled_at,
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
            "failures": self.failures,
            "entries_seen": self.entries_seen,
            "title": self.title,
            "created_at": self.created_at,
            "next_poll_at": self.next_poll_at,
            "last_error_at": self.last_error_at,
            "stories": self.stories,
        }


class FeedStore:
    """Create, read and remove feeds; claim polls; remember entries; record outcomes."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._set_slot = client.register_script(_SET_SLOT)
        self._record = client.register_script(_RECORD)
        self._prune = client.register_script(_PRUNE)

    # -- the feeds themselves ----------------------------------------------------------

    def create(self, url: str, topics: list[str], category_map: dict[str, str], every: int) -> Feed | None:
        """A new feed, or None if one already polls this URL."""
        feed_id = new_feed_id()
        if not self.client.hsetnx(keys.FEED_URLS, url, feed_id):
            return None
        now = time.time()
        fields = {
            "url": url,
            "topics": json.dumps(topics),
            "category_map": json.dumps(category_map, ensure_ascii=False),
            "every": every,
            "created_at": now,
            "failures": 0,
            "entries_seen": 0,
            "stories": 0,
        }
        pipe = self.client.pipeline()
        pipe.hset(keys.feed(feed_id), mapping=fields)
        pipe.zadd(keys.FEEDS, {feed_id: now})
        pipe.execute()
        return self.get(feed_id)

    def id_for_url(self, url: str) -> str | None:
        raw = self.client.hget(keys.FEED_URLS, url)
        return raw.decode() if raw is not None else None

    def get(self, feed_id: str) -> Feed | None:
        raw = self.client.hgetall(keys.feed(feed_id))
        return Feed.from_redis(feed_id, raw) if raw else None

    def list(self) -> list[Feed]:
        """Oldest first (the order they were added)."""
        ids = [raw.decode() for raw in self.client.zrange(keys.FEEDS, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for feed_id in ids:
            pipe.hgetall(keys.feed(feed_id))
        return [Feed.from_redis(i, raw) for i, raw in zip(ids, pipe.execute(), strict=True) if raw]

    def delete(self, feed_id: str) -> bool:
        feed = self.get(feed_id)
        if feed is None:
            return False
        pipe = self.client.pipeline()
        pipe.delete(keys.feed(feed_id), keys.feed_titles(feed_id), keys.feed_seen(feed_id), keys.feed_lease(feed_id))
        pipe.zrem(keys.FEEDS, feed_id)
        pipe.zrem(keys.FEEDS_DUE, feed_id)
        pipe.execute()
        if self.id_for_url(feed.url) == feed_id:
            self.client.hdel(keys.FEED_URLS, feed.url)
        return True

    # -- poll scheduling -------------------------------------------------------------------

    def set_slot(self, feed_id: str, slot: int) -> bool:
        """Make `slot` (Unix ms) the feed's one live poll; False if the feed is gone."""
        return bool(self._set_slot(keys=[keys.feed(feed_id), keys.FEEDS_DUE], args=[feed_id, slot]))

    def current_slot(self, feed_id: str) -> int | None:
        """The slot (Unix ms) of the feed's live poll, if it has one."""
        score = self.client.zscore(keys.FEEDS_DUE, feed_id)
        return int(score) if score is not None else None

    def claim(self, feed_id: str, slot: int, token: str, ttl: int) -> int:
        """1 if this poll may run (it now holds the lease), 0 if its slot is stale, -1 if leased."""
        return int(self._claim(keys=[keys.FEEDS_DUE, keys.feed_lease(feed_id)], args=[feed_id, slot, token, ttl]))

    def release(self, feed_id: str, token: str) -> None:
        self._release(keys=[keys.feed_lease(feed_id)], args=[token])

    def stalled(self, before: float) -> list[str]:
        """Feeds whose current slot is older than `before` and which nobody is polling."""
        ids = [raw.decode() for raw in self.client.zrangebyscore(keys.FEEDS_DUE, "-inf", int(before * 1000))]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for feed_id in ids:
            pipe.exists(keys.feed_lease(feed_id))
        return [feed_id for feed_id, leased in zip(ids, pipe.execute(), strict=True) if not leased]

    # -- entries ---------------------------------------------------------------------------

    def title_digests(self, feed_id: str, story_ids: list[str]) -> dict[str, str]:
        """{story id: title digest} of the entries among `story_ids` the feed remembers."""
        if not story_ids:
            return {}
        values = self.client.hmget(keys.feed_titles(feed_id), story_ids)
        return {sid: v.decode() for sid, v in zip(story_ids, values, strict=True) if v is not None}

    def remember_entries(self, feed_id: str, digests: Mapping[str, str], now: float) -> None:
        """Record every entry of a full read (touching those still there), then prune."""
        titles, seen = keys.feed_titles(feed_id), keys.feed_seen(feed_id)
        pipe = self.client.pipeline()
        if digests:
            pipe.hset(titles, mapping=dict(digests))
            pipe.zadd(seen, dict.fromkeys(digests, now))
        self._prune(keys=[seen, titles], args=[now - ENTRY_RETENTION, MAX_ENTRIES], client=pipe)
        # A feed removed mid-poll leaves nothing behind for longer than the retention.
        pipe.expire(titles, ENTRY_RETENTION)
        pipe.expire(seen, ENTRY_RETENTION)
        pipe.execute()

    # -- outcomes --------------------------------------------------------------------------

    def _apply(self, feed_id: str, values: Mapping[str, object], increments: Mapping[str, int]) -> int | None:
        args: list[object] = [len(values)]
        for name, value in values.items():
            args += [name, "" if value is None else value]
        for name, amount in increments.items():
            args += [name, amount]
        result = self._record(keys=[keys.feed(feed_id)], args=args)
        return None if result is None else int(result)

    def record_success(
        self,
        feed_id: str,
        now: float,
        *,
        not_modified: bool = False,
        validators: tuple[str | None, str | None] | None = None,
        title: str | None = None,
        new_entries: int = 0,
        stories: int = 0,
    ) -> None:
        """A fetch that worked (200 read in full, or 304). `validators` (ETag, Last-Modified)
        are stored only after a full read succeeded, so a broken body is never cached."""
        values: dict[str, object] = {"last_polled_at": now, "last_success_at": now, "failures": 0, "primed": 1}
        if validators is not None:
            values["etag"], values["last_modified"] = validators
        if title:
            values["title"] = title
        counter = "polls_not_modified" if not_modified else "polls_ok"
        self._apply(feed_id, values, {counter: 1, "entries_seen": new_entries, "stories": stories})

    def record_failure(self, feed_id: str, now: float, error: str) -> int:
        """A failed poll; returns the consecutive failures so far (0 if the feed is gone)."""
        values = {"last_polled_at": now, "last_error": error[:500], "last_error_at": now}
        return self._apply(feed_id, values, {"failures": 1, "polls_failed": 1}) or 0
