"""Campaign state in Redis: one hash per campaign, counters updated atomically.

The state machine is scheduled → queued → sending → done | cancelled | failed.
Every transition is a Lua compare-and-set, so a cancel racing a finishing batch
ends in exactly one final state. Work is counted in "units" (a batch job, or a
retry job): a unit finishes once (a re-run after a crash finds it finished), and
the campaign is done when no unit is pending.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import redis

from ..vocabulary import ReceiptType
from . import keys


class CampaignState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINAL_STATES = frozenset({CampaignState.DONE, CampaignState.CANCELLED, CampaignState.FAILED})
COUNTERS = ("targeted", "sent", "failed", "expired", "skipped", "retrying", *(kind.value for kind in ReceiptType))
# Campaign keys outlive the campaign long enough for receipts and the dashboard.
CAMPAIGN_TTL = 30 * 86400
# Sent markers only need to outlast the last possible retry of a campaign.
MARKER_TTL = 3 * 86400

# KEYS: campaign. ARGV: to_state, now, timestamp field ('' for none), allowed from states...
# Returns 1 if this call moved the state, 0 otherwise (already there, final, or missing).
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
for i = 4, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1])
    if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[2]) end
    return 1
  end
end
return 0
"""

# KEYS: campaign, planned-units set. ARGV: unit ids...
_PLAN_UNITS = """
local added = redis.call('SADD', KEYS[2], unpack(ARGV))
if added > 0 then redis.call('HINCRBY', KEYS[1], 'pending', added) end
return added
"""

# KEYS: campaign, done-units set. ARGV: unit id, now, the sending state, the done state.
# Returns 0 if the unit had finished already, 2 if it finished the campaign, else 1.
_FINISH_UNIT = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
local pending = redis.call('HINCRBY', KEYS[1], 'pending', -1)
if pending <= 0 and redis.call('HGET', KEYS[1], 'state') == ARGV[3] then
  redis.call('HSET', KEYS[1], 'state', ARGV[4], 'finished_at', ARGV[2])
  return 2
end
return 1
"""

# KEYS: lease. ARGV: token, ttl (0 releases). Only the holder may renew or release.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: campaign, todo list. ARGV: the sending state's name. Pops a batch range only while
# the campaign is sending, so a worker running ahead never starts a cancelled campaign's batch.
_TAKE_RANGE = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return false end
return redis.call('RPOP', KEYS[2])
"""

# KEYS: receipt bitmap, campaign. ARGV: subscription id, counter name, bitmap TTL.
_COUNT_RECEIPT = """
if redis.call('HEXISTS', KEYS[2], 'state') == 0 then return 0 end
if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
"""


def new_campaign_id() -> str:
    return "c" + secrets.token_hex(6)


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class CampaignStore:
    """Create campaigns, move them through their states, and count outcomes."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._transition = client.register_script(_TRANSITION)
        self._finish_unit = client.register_script(_FINISH_UNIT)
        self._count_receipt = client.register_script(_COUNT_RECEIPT)
        self._plan_units = client.register_script(_PLAN_UNITS)
        self._renew_lease = client.register_script(_RENEW_LEASE)
        self._take_range = client.register_script(_TAKE_RANGE)

    # -- creation and lookup -------------------------------------------------

    def create_for_story(
        self, story: Mapping[str, Any], state: CampaignState, send_at: float | None = None
    ) -> tuple[str, bool]:
        """The story's campaign: a new one, or the existing one (idempotent by story id).

        Returns (campaign id, created).
        """
        campaign_id = new_campaign_id()
        claimed = self.client.hsetnx(keys.STORY_CAMPAIGN, story["id"], campaign_id)
        if not claimed:
            return self.client.hget(keys.STORY_CAMPAIGN, story["id"]).decode(), False
        now = time.time()
        fields: dict[str, Any] = {
            "story": json.dumps(dict(story), separators=(",", ":")),
            "state": state.value,
            "created_at": now,
            "pending": 0,
            **dict.fromkeys(COUNTERS, 0),
        }
        if send_at is not None:
            fields["send_at"] = send_at
        pipe = self.client.pipeline()
        pipe.hset(keys.campaign(campaign_id), mapping=fields)
        pipe.expire(keys.campaign(campaign_id), CAMPAIGN_TTL)
        pipe.zadd(keys.CAMPAIGN_LIST, {campaign_id: now})
        pipe.execute()
        return campaign_id, True

    def id_for_story(self, story_id: str) -> str | None:
        raw = self.client.hget(keys.STORY_CAMPAIGN, story_id)
        return raw.decode() if raw is not None else None

    def remember_webhook(self, message_id: str, campaign_id: str, ttl: int = 7 * 86400) -> str:
        """Record which campaign a webhook message id produced; returns the first one recorded."""
        key = keys.webhook_id(message_id)
        if self.client.set(key, campaign_id, nx=True, ex=ttl):
            return campaign_id
        return self.client.get(key).decode()

    def campaign_for_webhook(self, message_id: str) -> str | None:
        raw = self.client.get(keys.webhook_id(message_id))
        return raw.decode() if raw is not None else None

    def get(self, campaign_id: str) -> dict[str, Any] | None:
        """The campaign as the operator API shows it (README, Operator API)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.campaign(campaign_id))
        pipe.hgetall(keys.campaign_errors(campaign_id))
        raw, errors = pipe.execute()
        if not raw:
            return None
        fields = _decode(raw)
        return {
            "id": campaign_id,
            "story": json.loads(fields["story"]),
            "state": fields["state"],
            **{name: int(fields.get(name, 0)) for name in COUNTERS},
            "created_at": float(fields["created_at"]),
            "started_at": float(fields["started_at"]) if "started_at" in fields else None,
            "finished_at": float(fields["finished_at"]) if "finished_at" in fields else None,
            "send_at": float(fields["send_at"]) if "send_at" in fields else None,
            "errors": {k: int(v) for k, v in _decode(errors).items()},
        }

    def story(self, campaign_id: str) -> dict[str, Any] | None:
        raw = self.client.hget(keys.campaign(campaign_id), "story")
        return json.loads(raw) if raw is not None else None

    def state(self, campaign_id: str) -> CampaignState | None:
        raw = self.client.hget(keys.campaign(campaign_id), "state")
        return CampaignState(raw.decode()) if raw is not None else None

    def list_ids(self, limit: int = 50) -> list[str]:
        return [raw.decode() for raw in self.client.zrevrange(keys.CAMPAIGN_LIST, 0, limit - 1)]

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        campaigns = (self.get(campaign_id) for campaign_id in self.list_ids(limit))
        return [c for c in campaigns if c is not None]

    # -- lifecycle -------------------------------------------------------------

    def transition(
        self, campaign_id: str, to: CampaignState, allowed_from: tuple[CampaignState, ...], stamp: str = ""
    ) -> bool:
        """Compare-and-set the state; `stamp` names a timestamp field set on first entry."""
        result = self._transition(
            keys=[keys.campaign(campaign_id)],
            args=[to.value, time.time(), stamp, *(s.value for s in allowed_from)],
        )
        return result == 1

    def cancel(self, campaign_id: str) -> bool:
        """Cancel unless already final; batches not yet sent then skip their work."""
        return self.transition(
            campaign_id,
            CampaignState.CANCELLED,
            (CampaignState.SCHEDULED, CampaignState.QUEUED, CampaignState.SENDING),
            stamp="finished_at",
        )

    def update_story(self, campaign_id: str, story: Mapping[str, Any]) -> bool:
        """Replace the story text of a campaign that has not finished (later batches use it)."""
        key = keys.campaign(campaign_id)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    state = pipe.hget(key, "state")
                    if state is None or CampaignState(state.decode()) in FINAL_STATES:
                        return False
                    pipe.multi()
                    pipe.hset(key, "story", json.dumps(dict(story), separators=(",", ":")))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def set_targeted(self, campaign_id: str, targeted: int) -> None:
        self.client.hset(keys.campaign(campaign_id), "targeted", targeted)

    def plan_units(self, campaign_id: str, unit_ids: list[str]) -> int:
        """Count units (batch or retry jobs) as pending before they are enqueued;
        a unit planned twice (a re-run after a crash) counts once."""
        if not unit_ids:
            return 0
        added = 0
        for start in range(0, len(unit_ids), 1000):
            added += int(
                self._plan_units(
                    keys=[keys.campaign(campaign_id), keys.campaign_units_planned(campaign_id)],
                    args=unit_ids[start : start + 1000],
                )
            )
        self.client.expire(keys.campaign_units_planned(campaign_id), CAMPAIGN_TTL)
        return added

    def unit_finished(self, campaign_id: str, unit_id: str) -> bool:
        return bool(self.client.sismember(keys.campaign_units_done(campaign_id), unit_id))

    def finish_unit(self, campaign_id: str, unit_id: str) -> bool:
        """Mark a unit finished (once); returns True when this finished the whole campaign."""
        result = self._finish_unit(
            keys=[keys.campaign(campaign_id), keys.campaign_units_done(campaign_id)],
            args=[unit_id, time.time(), CampaignState.SENDING.value, CampaignState.DONE.value],
        )
        if result:
            self.client.expire(keys.campaign_units_done(campaign_id), CAMPAIGN_TTL)
        return result == 2

    def offer_ranges(self, campaign_id: str, ranges: list[tuple[int, int]]) -> None:
        """List the campaign's batch ranges once, for workers that run ahead (see `take_range`)."""
        key = keys.campaign_todo(campaign_id)
        if ranges and not self.client.exists(key):
            pipe = self.client.pipeline()
            pipe.rpush(key, *(f"{start}:{end}" for start, end in ranges))
            pipe.expire(key, CAMPAIGN_TTL)
            pipe.execute()

    def take_range(self, campaign_id: str) -> tuple[int, int] | None:
        """Pop a batch range from the end of the list (RQ hands out jobs from the front, so
        a worker running ahead rarely meets another worker on the same range); None once
        the list is empty or the campaign is no longer sending."""
        raw = self._take_range(
            keys=[keys.campaign(campaign_id), keys.campaign_todo(campaign_id)], args=[CampaignState.SENDING.value]
        )
        if raw is None:
            return None
        start, _, end = raw.decode().partition(":")
        return int(start), int(end)

    def acquire_lease(self, campaign_id: str, unit_id: str, token: str, ttl: int) -> bool:
        return bool(self.client.set(keys.campaign_lease(campaign_id, unit_id), token, nx=True, ex=ttl))

    def renew_lease(self, campaign_id: str, unit_id: str, token: str, ttl: int) -> bool:
        key = keys.campaign_lease(campaign_id, unit_id)
        return bool(self._renew_lease(keys=[key], args=[token, ttl]))

    def release_lease(self, campaign_id: str, unit_id: str, token: str) -> None:
        self._renew_lease(keys=[keys.campaign_lease(campaign_id, unit_id)], args=[token, 0])

    def mark_done_if_idle(self, campaign_id: str) -> bool:
        """A campaign with nothing to send goes straight to done."""
        return self.transition(campaign_id, CampaignState.DONE, (CampaignState.SENDING,), stamp="finished_at")

    # -- counting --------------------------------------------------------------

    def add_counts(self, campaign_id: str, counts: Mapping[str, int], errors: Mapping[str, int]) -> None:
        """Add outcome counts (negative allowed, e.g. retrying) in one atomic step."""
        pipe = self.client.pipeline()
        queue_counts(pipe, campaign_id, counts, errors)
        pipe.execute()

    def count_receipt(self, campaign_id: str, subscription_id: int, kind: ReceiptType) -> bool:
        """Count a delivered/clicked/dismissed receipt once per subscriber; False if repeated.

        Raises:
            ValueError: `kind` is not a `ReceiptType`.
        """
        kind = ReceiptType(kind)
        return bool(
            self._count_receipt(
                keys=[keys.campaign_receipts(campaign_id, kind.value), keys.campaign(campaign_id)],
                args=[subscription_id, kind.value, CAMPAIGN_TTL],
            )
        )


def queue_counts(pipe: Any, campaign_id: str, counts: Mapping[str, int], errors: Mapping[str, int]) -> None:
    """Queue adding outcome counts and error reasons on `pipe` (a sync or asyncio pipeline:
    queueing is the same on both)."""
    for name, value in counts.items():
        if value:
            pipe.hincrby(keys.campaign(campaign_id), name, value)
    if errors:
        for reason, value in errors.items():
            pipe.hincrby(keys.campaign_errors(campaign_id), reason, value)
        pipe.expire(keys.campaign_errors(campaign_id), CAMPAIGN_TTL)


def queue_resolved(pipe: Any, campaign_id: str, ids: Sequence[int]) -> None:
    """Queue setting the campaign's resolved bit of each id on `pipe` (sync or asyncio)."""
    if not ids:
        return
    key = keys.campaign_resolved(campaign_id)
    # One BITFIELD for all ids instead of a SETBIT each: redis-py's per-command cost was
    # 3 % of a batch's CPU.
    args: list[str | int] = []
    for id_ in ids:
        args += ["SET", "u1", id_, 1]
    pipe.execute_command("BITFIELD", key, *args)
    pipe.expire(key, MARKER_TTL)


def ids_in_bitmap(data: bytes, first_id: int) -> list[int]:
    """Ids of the set bits in `data`, whose first bit is `first_id` (Redis bit order: MSB first)."""
    ids: list[int] = []
    for offset, byte in enumerate(data):
        if byte:
            base = first_id + offset * 8
            ids.extend(base + bit for bit in range(8) if byte & (0x80 >> bit))
    return ids


def cut_ranges(bitmap: bytes, batch_size: int) -> list[tuple[int, int]]:
    """Split a bitmap into id ranges [start, end) of about `batch_size` set bits.

    Ranges start and end on byte boundaries so a batch reads whole bytes.
    """
    ranges: list[tuple[int, int]] = []
    start_byte, count = 0, 0
    for index, byte in enumerate(bitmap):
        count += byte.bit_count()
        if count >= batch_size:
            ranges.append((start_byte * 8, (index + 1) * 8))
            start_byte, count = index + 1, 0
    if count:
        ranges.append((start_byte * 8, len(bitmap) * 8))
    return ranges


class AudienceStore:
    """A campaign's audience snapshot and its per-subscriber sent markers (bitmaps)."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def snapshot(self, campaign_id: str, topic_ids: list[str]) -> bytes:
        """Freeze who follows any of the topics (deduplicated by the OR); returns the bitmap."""
        key = keys.campaign_audience(campaign_id)
        pipe = self.client.pipeline()
        if topic_ids:
            pipe.bitop("OR", key, *(keys.topic(t) for t in topic_ids))
        pipe.expire(key, MARKER_TTL)
        pipe.get(key)
        return pipe.execute()[-1] or b""

    def audience(self, campaign_id: str) -> bytes | None:
        """The snapshot taken earlier, if any (a re-run of the campaign job reuses it)."""
        return self.client.get(keys.campaign_audience(campaign_id))

    def pending_ids(self, campaign_id: str, start: int, end: int, only: list[int] | None = None) -> list[int]:
        """Audience ids in [start, end) (or just `only`) not yet resolved."""
        first_byte, last_byte = start // 8, (end - 1) // 8
        pipe = self.client.pipeline(transaction=False)
        pipe.getrange(keys.campaign_audience(campaign_id), first_byte, last_byte)
        pipe.getrange(keys.campaign_resolved(campaign_id), first_byte, last_byte)
        audience, sent = pipe.execute()
        sent_ids = set(ids_in_bitmap(sent, first_byte * 8))
        candidates = only if only is not None else ids_in_bitmap(audience, first_byte * 8)
        return [i for i in candidates if start <= i < end and i not in sent_ids]
