"""RQ jobs: plain functions taking ids, so they import cleanly and run in a test without a worker.

`start_campaign` snapshots the audience and enqueues batch jobs over id ranges;
`send_batch` pushes to one range (or, on a retry, just the ids it carries) and
only counts outcomes: everything about HTTP and crypto is in `delivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from datetime import date
from typing import Any

from service import receipts, targeting
from service.logs import log_push_problems
from service.store.campaign_store import CampaignState, cut_ranges
from service.store.metrics_store import PushTally
from service.subscriptions import Subscription

from .delivery import Outcome, Result, Sender
from .message import PushHeaders, build_template
from .queueing import BATCH_DEADLINE, enqueue_batches, enqueue_retry, unit_id
from .runtime import Runtime, runtime

logger = logging.getLogger(__name__)

# Outcomes are written to Redis this often: sent markers land "right after" the
# 2xx (a crash re-sends at most this window plus what was in flight), and
# operators see progress live.
FLUSH_INTERVAL = 0.05
# The lease on a unit outlives a flush many times over; a killed worker's lease
# lapses long before RQ hands its job to another worker.
LEASE_TTL = 30
MAX_BACKOFF = 300.0
# Take on the campaign's next batch while the current one drains (see `take_ahead`).
RUN_AHEAD = True


class UnitBusy(Exception):
    """Another worker holds this unit's lease; RQ's Retry runs the job again later."""


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter, so a recovering push service is not hit in lockstep."""
    return min(MAX_BACKOFF, 5.0 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def start_campaign(campaign_id: str) -> dict[str, Any]:
    """Snapshot the audience (followers of any of the story's topics, once each) and enqueue its batches."""
    rt = runtime()
    campaigns = rt.store.campaigns
    campaigns.transition(
        campaign_id, CampaignState.SENDING, (CampaignState.SCHEDULED, CampaignState.QUEUED), stamp="started_at"
    )
    state = campaigns.state(campaign_id)
    if state is not CampaignState.SENDING:
        return {"state": state.value if state else "missing"}
    story = campaigns.story(campaign_id) or {}
    audiences = rt.store.audiences
    # A re-run after a crash reuses the first snapshot, so batches stay the same ranges.
    bitmap = audiences.audience(campaign_id)
    if bitmap is None:
        topics = [t for t in story.get("topics", []) if t in rt.store.topic_ids]
        bitmap = audiences.snapshot(campaign_id, topics)
    targeted = int.from_bytes(bitmap, "big").bit_count()
    campaigns.set_targeted(campaign_id, targeted)
    ranges = cut_ranges(bitmap, rt.settings.batch_size)
    campaigns.plan_units(campaign_id, [unit_id(start, 1) for start, _ in ranges])
    if not ranges:
        campaigns.mark_done_if_idle(campaign_id)
    else:
        campaigns.offer_ranges(campaign_id, ranges)
        enqueue_batches(rt.queue, campaign_id, ranges)
    logger.info(
        "campaign %s started: %d subscribers in %d batches",
        campaign_id,
        targeted,
        len(ranges),
        extra={"campaign_id": campaign_id, "targeted": targeted, "batches": len(ranges)},
    )
    return {"targeted": targeted, "batches": len(ranges)}


def send_batch(
    campaign_id: str, start: int, end: int, attempt: int = 1, only: list[int] | None = None
) -> dict[str, Any]:
    """Push the campaign to the audience ids in [start, end) (or `only`), each at most once."""
    rt = runtime()
    campaigns = rt.store.campaigns
    unit = unit_id(start, attempt)
    if campaigns.unit_finished(campaign_id, unit):
        return {"skipped": "already finished"}
    state = campaigns.state(campaign_id)
    if state is not CampaignState.SENDING:
        campaigns.finish_unit(campaign_id, unit)
        return {"skipped": state.value if state else "missing"}
    token = uuid.uuid4().hex
    if not campaigns.acquire_lease(campaign_id, unit, token, LEASE_TTL):
        raise UnitBusy(f"campaign {campaign_id} unit {unit} is being sent by another worker")
    first = BatchRun(rt, campaign_id, start, end, attempt, only, token)
    runs = [first]
    try:
        rt.loop.run_until_complete(drive(rt, runs))
    finally:
        for run in runs:
            run.release()
    summaries = [run.summary() for run in runs]
    return {**summaries[0], "ran_ahead": summaries[1:]}


def take_ahead(rt: Runtime, campaign_id: str) -> BatchRun | None:
    """Lease another batch of the campaign to start while this one drains its last
    requests, so the worker's connections never idle between batches. That batch's own
    RQ job later finds it finished (or leased, and RQ's Retry runs it again)."""
    campaigns = rt.store.campaigns
    for _ in range(3):
        taken = campaigns.take_range(campaign_id)
        if taken is None:
            return None
        start, end = taken
        unit = unit_id(start, 1)
        token = uuid.uuid4().hex
        if not campaigns.unit_finished(campaign_id, unit) and campaigns.acquire_lease(
            campaign_id, unit, token, LEASE_TTL
        ):
            return BatchRun(rt, campaign_id, start, end, 1, None, token)
    return None


async def drive(rt: Runtime, runs: list[BatchRun]) -> None:
    """Send `runs[0]`, taking on further batches of its campaign (appended to `runs`)
    while fewer than two windows of requests are left, until the deadline."""
    started = time.monotonic()
    # Set when a run's last push settles, to finish it without waiting out the interval;
    # counters instead of asyncio.wait over every task (its callbacks cost ~4 % of a push).
    settled = asyncio.Event()
    active = list(runs)
    for run in active:
        run.start(settled)
    while active:
        if any(run.remaining for run in active):
            settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), FLUSH_INTERVAL)
        elapsed = time.monotonic() - started
        for run in list(active):
            run.flush()
            if run.cancelled or elapsed > BATCH_DEADLINE or not run.remaining:
                await run.finish()
                active.remove(run)
        still_pending = sum(run.remaining for run in active)
        if (
            RUN_AHEAD
            and not runs[0].cancelled
            and elapsed < BATCH_DEADLINE / 2
            and still_pending < 2 * rt.settings.max_in_flight
        ):
            ahead = take_ahead(rt, runs[0].campaign_id)
            if ahead is not None:
                runs.append(ahead)
                active.append(ahead)
                ahead.start(settled)


def _finished(rt: Runtime, campaign_id: str) -> None:
    """This batch finished the campaign: observe how long it took, say so in the log."""
    campaign = rt.store.campaigns.get(campaign_id) or {}
    if campaign.get("started_at") and campaign.get("finished_at"):
        rt.store.metrics.observe_campaign_duration(campaign["finished_at"] - campaign["started_at"])
    counts = {name: campaign.get(name) for name in ("targeted", "sent", "failed", "expired", "skipped")}
    logger.info("campaign %s done: %s", campaign_id, counts, extra={"campaign_id": campaign_id, **counts})


class BatchRun:
    """One execution of a batch unit: sends concurrently, records outcomes as they come."""

    def __init__(
        self, rt: Runtime, campaign_id: str, start: int, end: int, attempt: int, only: list[int] | None, token: str
    ):
        self.rt = rt
        self.campaign_id = campaign_id
        self.start_id, self.end, self.attempt = start, end, attempt
        self.only = set(only) if only is not None else None
        self.only_list = only
        self.token = token
        self.unit = unit_id(start, attempt)
        self.counts: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.resolved: list[int] = []
        self.expired: list[tuple[int, Subscription]] = []
        self.refused: list[tuple[int, Subscription]] = []
        self.succeeded_after_failure: list[int] = []
        self.retry_ids: list[int] = []
        self.retry_delay = 0.0
        self.cancelled = False
        self.settled: set[int] = set()
        self.failing: set[int] = set()
        self.expires_at = float("inf")
        self.totals: dict[str, int] = {}
        self.tally = PushTally()  # for /metrics, written with each flush
        self.ids: list[int] = []
        self.tasks: list[asyncio.Future] = []
        self.released = False
        self.remaining = 0  # pushes started and not yet settled

    # -- bookkeeping -------------------------------------------------------------

    def _count(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value
        self.totals[name] = self.totals.get(name, 0) + value

    def _error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def record(self, id_: int, subscription: Subscription | None, result: Result) -> None:
        self.settled.add(id_)
        endpoint, elapsed = (subscription.endpoint if subscription else None), result.elapsed
        if self.only is not None:
            self._count("retrying", -1)  # this attempt settles the earlier "retrying"
        outcome = result.outcome
        if outcome is Outcome.RETRY:
            delay = result.retry_after if result.retry_after is not None else backoff(self.attempt)
            if self.attempt >= self.rt.settings.max_attempts:
                outcome, result = Outcome.FAILED, Result(Outcome.FAILED, f"{result.reason}_gave_up", result.status)
            elif time.time() + delay > self.expires_at:
                outcome, result = Outcome.FAILED, Result(Outcome.FAILED, "ttl_expired", result.status)
            else:
                self.retry_ids.append(id_)
                self.retry_delay = max(self.retry_delay, delay)
                self._count("retrying")
                self.tally.add(endpoint, "retry", elapsed, result.reason, result.status)
                return
        self.resolved.append(id_)
        if outcome is Outcome.SKIPPED:  # no request was made: no origin, no latency
            self.tally.add(None, outcome.value, None, result.reason)
            self._count("skipped")
            self._error(result.reason)
            return
        self.tally.add(endpoint, outcome.value, elapsed, result.reason, result.status)
        if outcome is Outcome.SENT:
            self._count("sent")
            if id_ in self.failing:
                self.succeeded_after_failure.append(id_)
        elif outcome is Outcome.EXPIRED:
            self._count("expired")
            self._error(result.reason)
            if subscription is not None:
                self.expired.append((id_, subscription))
        else:
            self._count("failed")
            self._error(result.reason)
            if subscription is not None and result.status is not None:
                self.refused.append((id_, subscription))

    def flush(self) -> None:
        """Write what happened since the last flush; notice a cancel; keep the lease."""
        store = self.rt.store
        if self.resolved:
            store.audiences.mark_resolved(self.campaign_id, self.resolved)
            self.resolved = []
        store.campaigns.add_counts(self.campaign_id, self.counts, self.errors)
        self.counts, self.errors = {}, {}
        store.metrics.record_pushes(self.tally)
        log_push_problems(logger, self.campaign_id, self.tally.problems)
        self.tally = PushTally()
        subscriptions = store.subscriptions
        for id_, subscription in self.expired:
            subscriptions.delete_if_unchanged(id_, subscription)
        now = time.time()
        for id_, subscription in self.refused:
            subscriptions.record_permanent_failure(id_, subscription, now)
        subscriptions.clear_failures(self.succeeded_after_failure)
        self.expired, self.refused, self.succeeded_after_failure = [], [], []
        if store.campaigns.state(self.campaign_id) is not CampaignState.SENDING:
            self.cancelled = True
        store.campaigns.renew_lease(self.campaign_id, self.unit, self.token, LEASE_TTL)

    # -- sending -----------------------------------------------------------------

    def start(self, settled: asyncio.Event) -> None:
        """Load the unit's subscribers and start a task per push (the sender bounds how many fly)."""
        rt, store = self.rt, self.rt.store
        campaign = store.campaigns.get(self.campaign_id)
        if campaign is None:
            return
        story = campaign["story"]
        headers = PushHeaders.for_story(story)
        started = campaign["started_at"] or time.time()
        self.expires_at = started + headers.ttl
        ids = store.audiences.pending_ids(self.campaign_id, self.start_id, self.end, self.only_list)
        if self.only is not None:
            # Ids settled by an earlier run of this unit were already taken off "retrying".
            self.only = set(ids)
        self.ids = ids
        subscriptions = store.subscriptions.get_many(ids)
        self.failing = store.subscriptions.failing(ids)
        template = build_template(self.campaign_id, story)
        sender: Sender = rt.sender  # the seam: jobs never see HTTP or crypto
        key = rt.receipt_key

        async def push(id_: int, subscription: Subscription) -> None:
            try:
                payload = template.render(receipts.mint(key, self.campaign_id, id_))
                try:
                    result = await sender.send(subscription, payload, headers)
                except ValueError:  # a stored key that no longer makes a point: not retryable
                    result = Result(Outcome.FAILED, "bad_subscription_key")
                self.record(id_, subscription, result)
            finally:
                self.remaining -= 1
                if not self.remaining:
                    settled.set()

        for id_, subscription in self._targeted(ids, subscriptions):
            self.remaining += 1
            self.tasks.append(asyncio.ensure_future(push(id_, subscription)))

    def _targeted(self, ids: list[int], subscriptions: list[Subscription | None]) -> list[tuple[int, Subscription]]:
        """The (id, subscription) pairs to send to; the rest are recorded here: gone since
        the snapshot, or in quiet hours or over the daily cap (first attempt only: a retry
        is the same push, already counted)."""
        rules = self.rt.settings.targeting
        apply_rules = self.attempt == 1 and rules.active
        now = time.time()
        chosen: list[tuple[int, Subscription]] = []
        capped_days: list[tuple[int, date]] = []
        for id_, subscription in zip(ids, subscriptions, strict=True):
            if subscription is None:  # unsubscribed since the snapshot
                self.record(id_, None, Result(Outcome.EXPIRED, "unsubscribed"))
                continue
            if apply_rules:
                local = rules.local_time(subscription.timezone, now)
                if rules.quiet(local):
                    self.record(id_, subscription, Result(Outcome.SKIPPED, targeting.QUIET_HOURS))
                    continue
                if rules.frequency_cap:
                    capped_days.append((id_, rules.cap_day(local)))
            chosen.append((id_, subscription))
        if not capped_days:
            return chosen
        allowed = self.rt.store.frequency_caps.take(capped_days, rules.frequency_cap)
        over = {id_ for (id_, _), ok in zip(capped_days, allowed, strict=True) if not ok}
        for id_, subscription in chosen:
            if id_ in over:
                self.record(id_, subscription, Result(Outcome.SKIPPED, targeting.FREQUENCY_CAP))
        return [(id_, subscription) for id_, subscription in chosen if id_ not in over]

    async def finish(self) -> None:
        """Stop what is still in flight (cancel or deadline), hand it to a retry job, write
        the rest, and mark the unit finished."""
        leftover = [t for t in self.tasks if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)
        if not self.cancelled:
            self._retry_unfinished(self.ids)
        self.flush()
        self.release()
        campaigns = self.rt.store.campaigns
        summary = self.summary()
        logger.info(
            "campaign %s batch %s: %s",
            self.campaign_id,
            self.unit,
            summary,
            extra={"campaign_id": self.campaign_id, **summary},
        )
        if campaigns.finish_unit(self.campaign_id, self.unit):
            _finished(self.rt, self.campaign_id)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.rt.store.campaigns.release_lease(self.campaign_id, self.unit, self.token)

    def summary(self) -> dict[str, Any]:
        return {"campaign": self.campaign_id, "unit": self.unit, **self.totals}

    def _retry_unfinished(self, ids: list[int]) -> None:
        """Hand the ids still to be tried to one delayed job (the rest is never touched again)."""
        for id_ in ids:
            if id_ not in self.settled:  # still in flight at the deadline
                self.record(id_, None, Result(Outcome.RETRY, "batch_deadline"))
        if not self.retry_ids:
            return
        next_attempt = self.attempt + 1
        campaigns = self.rt.store.campaigns
        campaigns.plan_units(self.campaign_id, [unit_id(self.start_id, next_attempt)])
        enqueue_retry(
            self.rt.queue, self.campaign_id, self.start_id, self.end, next_attempt, self.retry_ids, self.retry_delay
        )
        logger.info(
            "campaign %s unit %s: %d to retry in %.0fs",
            self.campaign_id,
            self.unit,
            len(self.retry_ids),
            self.retry_delay,
            extra={"campaign_id": self.campaign_id, "unit": self.unit, "retry": len(self.retry_ids)},
        )
