"""Operational counters in Redis: one hash per metric family, shared by every process.

Web and worker processes on several machines all add to the same totals, so
`/metrics` answers the same whichever gunicorn worker serves the scrape and
nothing is lost when a process restarts (no per-process state, unlike
prometheus-client's own multiprocess mode, which only works on one machine).
Workers count a batch's outcomes in memory (`PushTally`) and write them in one
round trip per flush, so counting costs no Redis call per push.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from . import keys

WEBHOOK_OUTCOMES = ("accepted", "duplicate", "unauthorized", "invalid", "not_found", "error")
PUSH_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A campaign to a few thousand subscribers takes seconds; a million, minutes.
CAMPAIGN_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Rate buckets outlive the dashboard's one-hour chart by a margin.
RATE_TTL = 2 * 3600
NO_ORIGIN = "none"  # outcomes without a push: the subscriber left before the batch ran
# "device_throttled": a 429/406 about one subscription (an Apple device over its quota, a
# throttled WNS channel), which holds back nothing else on its push service.
LANE_EVENTS = ("throttled", "device_throttled", "unreachable", "circuit_opened")
# An origin with lanes in several states (one per worker) shows the worst of them.
LANE_STATES = ("circuit_open", "probing", "throttled", "open")
# A worker's lane report older than this is from a worker that stopped sending (or died).
LANE_REPORT_TTL = 15.0


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


def _bucket(bounds: tuple[float, ...], value: float) -> str:
    """The label of the smallest bucket bound holding `value` ("+Inf" past the last)."""
    index = bisect_left(bounds, value)
    return _bound(bounds[index] if index < len(bounds) else float("inf"))


@dataclass
class Histogram:
    """A histogram as Prometheus wants it: cumulative bucket counts, sum and count."""

    buckets: list[tuple[str, int]]
    sum: float
    count: int


@dataclass
class PushTally:
    """One batch's push outcomes since its last flush, counted in memory."""

    results: Counter[tuple[str, str]] = field(default_factory=Counter)
    durations: Counter[str] = field(default_factory=Counter)
    duration_sum: float = 0.0
    # (origin, result, reason, status) of everything that was not sent, for the batch's log lines.
    problems: Counter[tuple[str, str, str, int | None]] = field(default_factory=Counter)

    def add(
        self, origin: str | None, result: str, elapsed: float | None, reason: str = "", status: int | None = None
    ) -> None:
        """Count one outcome. `origin` is the push service's label ("fcm", "apple", a
        configured host: never an endpoint, which is a credential), None when no push
        service was involved; `elapsed` None when no answer came (nothing to time)."""
        origin = origin or NO_ORIGIN
        self.results[(result, origin)] += 1
        if elapsed is not None:
            self.durations[_bucket(PUSH_DURATION_BUCKETS, elapsed)] += 1
            self.duration_sum += elapsed
        if result != "sent":
            self.problems[(origin, result, reason, status)] += 1

    @property
    def pushes(self) -> int:
        """Pushes answered (the send-rate counter): the ones that were timed."""
        return sum(self.durations.values())

    def merge(self, other: PushTally) -> None:
        self.results.update(other.results)
        self.durations.update(other.durations)
        self.duration_sum += other.duration_sum
        self.problems.update(other.problems)

    def __bool__(self) -> bool:
        return bool(self.results)


class MetricsStore:
    """Write and read the counters behind `/metrics` and the dashboard's send rate."""

    def __init__(self, client: redis.Redis):
        self.client = client

    # -- writes ------------------------------------------------------------------

    def record_pushes(self, tally: PushTally, now: float | None = None) -> None:
        """Add a batch's tally (one round trip, no transaction: counters only ever grow)."""
        if not tally:
            return
        minute = int((now or time.time()) // 60)
        pipe = self.client.pipeline(transaction=False)
        for (result, origin), count in tally.results.items():
            pipe.hincrby(keys.METRICS_PUSHES, f"{result}|{origin}", count)
        if tally.durations:
            for bound, count in tally.durations.items():
                pipe.hincrby(keys.METRICS_PUSH_DURATION, bound, count)
            pipe.hincrby(keys.METRICS_PUSH_DURATION, "count", sum(tally.durations.values()))
            pipe.hincrbyfloat(keys.METRICS_PUSH_DURATION, "sum", tally.duration_sum)
        if tally.pushes:
            pipe.incrby(keys.metrics_rate(minute), tally.pushes)
            pipe.expire(keys.metrics_rate(minute), RATE_TTL)
        pipe.execute()

    def record_lane_events(self, events: Mapping[tuple[str, str], int]) -> None:
        """Add per-origin lane events (throttle answers, per-device throttles, unreachable
        requests, circuits opened)."""
        if not events:
            return
        pipe = self.client.pipeline(transaction=False)
        for (origin, event), count in events.items():
            pipe.hincrby(keys.METRICS_LANE_EVENTS, f"{event}|{origin}", count)
        pipe.execute()

    def report_lanes(self, worker: str, lanes: Iterable[Mapping[str, Any]], now: float | None = None) -> None:
        """Replace one worker's report of its lanes (state, limit, in flight, queued per origin)."""
        report = {"at": now or time.time(), "lanes": list(lanes)}
        self.client.hset(keys.LANE_REPORTS, worker, json.dumps(report, separators=(",", ":")))

    def observe_campaign_duration(self, seconds: float) -> None:
        """A campaign reached done after `seconds` from its start."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(keys.METRICS_CAMPAIGN_DURATION, _bucket(CAMPAIGN_DURATION_BUCKETS, seconds), 1)
        pipe.hincrby(keys.METRICS_CAMPAIGN_DURATION, "count", 1)
        pipe.hincrbyfloat(keys.METRICS_CAMPAIGN_DURATION, "sum", max(0.0, seconds))
        pipe.execute()

    def count_webhook(self, outcome: str) -> None:
        if outcome not in WEBHOOK_OUTCOMES:
            raise ValueError(outcome)
        self.client.hincrby(keys.METRICS_WEBHOOKS, outcome, 1)

    # -- reads -------------------------------------------------------------------

    def pushes(self) -> dict[tuple[str, str], int]:
        """{(result, origin): count} since the store was created."""
        raw = self.client.hgetall(keys.METRICS_PUSHES)
        counts: dict[tuple[str, str], int] = {}
        for name, value in raw.items():
            result, _, origin = name.decode().partition("|")
            counts[(result, origin)] = int(value)
        return counts

    def lane_events(self) -> dict[tuple[str, str], int]:
        """{(event, origin): count} since the store was created."""
        counts: dict[tuple[str, str], int] = {}
        for name, value in self.client.hgetall(keys.METRICS_LANE_EVENTS).items():
            event, _, origin = name.decode().partition("|")
            counts[(event, origin)] = int(value)
        return counts

    def lanes(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per origin, over the workers that reported lately: how many of their lanes are in
        each state, and the sum of their limits, requests in flight and pushes queued.
        Reports of workers that went quiet are dropped (and deleted)."""
        now = now or time.time()
        merged: dict[str, dict[str, Any]] = {}
        stale = []
        for worker, raw in self.client.hgetall(keys.LANE_REPORTS).items():
            report = json.loads(raw)
            if now - report["at"] > LANE_REPORT_TTL:
                stale.append(worker)
                continue
            for lane in report["lanes"]:
                origin = lane["origin"]
                empty = {"origin": origin, "states": Counter(), "limit": 0, "in_flight": 0, "queued": 0}
                row = merged.setdefault(origin, empty)
                row["states"][lane["state"]] += 1
                for name in ("limit", "in_flight", "queued"):
                    row[name] += lane[name]
        if stale:
            self.client.hdel(keys.LANE_REPORTS, *stale)
        return [{**row, "states": dict(row["states"])} for _, row in sorted(merged.items())]

    def lane_rows(self) -> list[dict[str, Any]]:
        """Per push-service origin: its lanes' state over the workers sending now (`idle` when
        none is), their limits, requests in flight and pushes queued, and since-ever counts
        of throttle answers, per-device throttles, unreachable requests and circuits opened
        (dashboard and /metrics)."""
        events = self.lane_events()
        live = {row["origin"]: row for row in self.lanes()}
        rows = []
        for origin in sorted(set(live) | {origin for _, origin in events}):
            row = live.get(origin, {"states": {}, "limit": 0, "in_flight": 0, "queued": 0})
            rows.append(
                {
                    "origin": origin,
                    "state": next((name for name in LANE_STATES if row["states"].get(name)), "idle"),
                    "workers": row["states"],
                    "limit": row["limit"],
                    "in_flight": row["in_flight"],
                    "queued": row["queued"],
                    **{event: events.get((event, origin), 0) for event in LANE_EVENTS},
                }
            )
        return rows

    def webhook_calls(self) -> dict[str, int]:
        raw = {k.decode(): int(v) for k, v in self.client.hgetall(keys.METRICS_WEBHOOKS).items()}
        return {outcome: raw.get(outcome, 0) for outcome in WEBHOOK_OUTCOMES}

    def push_durations(self) -> Histogram:
        return self._histogram(keys.METRICS_PUSH_DURATION, PUSH_DURATION_BUCKETS)

    def campaign_durations(self) -> Histogram:
        return self._histogram(keys.METRICS_CAMPAIGN_DURATION, CAMPAIGN_DURATION_BUCKETS)

    def _histogram(self, key: str, bounds: tuple[float, ...]) -> Histogram:
        raw = {k.decode(): v for k, v in self.client.hgetall(key).items()}
        buckets, running = [], 0
        for bound in (*bounds, float("inf")):
            running += int(raw.get(_bound(bound), 0))
            buckets.append((_bound(bound), running))
        return Histogram(buckets, float(raw.get("sum", 0)), int(raw.get("count", 0)))

    def rate_buckets(self, minutes: int, now: float | None = None) -> list[tuple[int, int]]:
        """[(minute start as Unix time, pushes)] for the last `minutes` minutes, oldest first."""
        current = int((now or time.time()) // 60)
        first = current - minutes + 1
        values = self.client.mget([keys.metrics_rate(m) for m in range(first, current + 1)])
        return [(m * 60, int(v or 0)) for m, v in zip(range(first, current + 1), values, strict=True)]

    def send_rate(self, now: float | None = None) -> float:
        """Pushes per second over the last 60 s: this minute plus the overlapping part of the last."""
        now = now or time.time()
        (_, previous), (_, current) = self.rate_buckets(2, now)
        into_minute = (now % 60) / 60
        return (previous * (1 - into_minute) + current) / 60

    def subscriptions_created(self) -> int:
        """Subscriptions ever created (the id sequence): the funnel's "subscribed" step."""
        return int(self.client.get(keys.SUBSCRIPTION_SEQ) or 0)
