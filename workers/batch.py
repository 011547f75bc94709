"""One batch unit sent: a range of a campaign's audience (or, on a retry, some ids of it).

A `BatchRun` loads its subscribers, applies the targeting rules, submits every push to the
sender and decides what each answer means (with the `RetryPolicy`); the outcomes go into its
`Ledger`, which the dispatcher writes. Everything about HTTP and crypto stays behind the
`Sender` seam.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import date
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any

from service import receipts, targeting
from service.logs import log_push_problems
from service.store.campaign_store import CampaignState
from service.subscriptions import Subscription

from .delivery import Outcome, Result, Sender
from .ledger import Ledger, Upkeep
from .message import PushHeaders, build_template
from .queueing import enqueue_retry, unit_id
from .retry import Retry
from .runtime import Runtime

if TYPE_CHECKING:
    from .dispatch import OutcomeWriter

logger = logging.getLogger(__name__)

# The lease on a unit outlives a renewal (each second) many times over; a killed worker's
# lease lapses long before RQ hands its job to another worker.
LEASE_TTL = 30
# A push still waiting for a slot when its batch reaches the deadline is tried again soon;
# one withdrawn by a stop (or never started) comes back as this.
DEADLINE_RETRY = Result(Outcome.RETRY, "batch_deadline", retry_after=1.0, attempted=False)
WITHDRAWN = Result(Outcome.RETRY, "withdrawn", attempted=False)


class Stop(Enum):
    """Why a run stops starting pushes before all are settled."""

    DEADLINE = "deadline"  # the job's time is up: the rest go to a retry job
    CANCELLED = "cancelled"  # the campaign left `sending`: the rest are dropped


@dataclass(frozen=True)
class Unit:
    """What a batch job names: the id range, the retry round, and (on a retry) the ids
    to try with the attempts each has used."""

    campaign_id: str
    start: int
    end: int
    attempt: int = 1
    only: list[int] | None = None
    used: list[int] | None = None

    @property
    def id_(self) -> str:
        return unit_id(self.start, self.attempt)

    def attempts_used(self) -> dict[int, int]:
        if self.only is None:
            return {}
        if self.used is None:  # a retry job from before attempts were counted per push
            return dict.fromkeys(self.only, self.attempt - 1)
        return dict(zip(self.only, self.used, strict=True))


class BatchRun:
    """One execution of a unit, holding its lease."""

    def __init__(self, rt: Runtime, unit: Unit, token: str, writer: OutcomeWriter):
        self.rt, self.unit, self.token, self.writer = rt, unit, token, writer
        self.campaign_id = unit.campaign_id
        self.ledger = Ledger()
        self.used = unit.attempts_used()
        self.expires_at = float("inf")
        self.remaining = 0  # pushes started and not yet settled
        self.stopped: Stop | None = None
        self.all_settled = asyncio.Event()
        self.released = False

    # -- starting ------------------------------------------------------------------------

    def start(self) -> None:
        """Load the unit's subscribers and submit every push (the lanes bound how many fly)."""
        store = self.rt.store
        campaign = store.campaigns.get(self.campaign_id)
        if campaign is None or campaign["state"] != CampaignState.SENDING:
            self.stopped = Stop.CANCELLED
            self.all_settled.set()
            return
        story = campaign["story"]
        headers = PushHeaders.for_story(story)
        self.expires_at = (campaign["started_at"] or time.time()) + headers.ttl
        ids = store.audiences.pending_ids(self.campaign_id, self.unit.start, self.unit.end, self.unit.only)
        subscriptions = store.subscriptions.get_many(ids)
        self.ledger = Ledger(store.subscriptions.failing(ids), retrying=self.unit.only is not None)
        template = build_template(self.campaign_id, story)
        sender: Sender = self.rt.sender  # the seam: jobs never see HTTP or crypto
        key = self.rt.receipt_key
        chosen = self._targeted(ids, subscriptions)
        self.remaining = len(chosen)  # before any is submitted: some are done at once
        for id_, subscription in chosen:
            payload = template.render(receipts.mint(key, self.campaign_id, id_))
            sender.submit(subscription, payload, headers, partial(self._done, id_, subscription), self)
        if not self.remaining:
            self.all_settled.set()
        self.writer.poke()

    def _done(self, id_: int, subscription: Subscription, result: Result) -> None:
        try:
            if result.reason != WITHDRAWN.reason:
                self.record(id_, subscription, result)
            elif self.stopped is Stop.DEADLINE:  # never sent: soon again, costing no attempt
                self.record(id_, subscription, DEADLINE_RETRY)
        finally:
            self.remaining -= 1
            if not self.remaining:
                self.all_settled.set()

    def _targeted(self, ids: list[int], subscriptions: list[Subscription | None]) -> list[tuple[int, Subscription]]:
        """The (id, subscription) pairs to send to; the rest are recorded here: gone since
        the snapshot, or in quiet hours or over the daily cap (first attempt only: a retry
        is the same push, already counted)."""
        rules = self.rt.settings.targeting
        apply_rules = self.unit.attempt == 1 and rules.active
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

    # -- outcomes ------------------------------------------------------------------------

    def record(self, id_: int, subscription: Subscription | None, result: Result) -> None:
        if result.outcome is Outcome.RETRY:
            decision = self.rt.retry_policy.decide(
                result, self.used.get(id_, self.unit.attempt - 1), time.time(), self.expires_at
            )
            if isinstance(decision, Retry):
                self.ledger.defer(id_, result, decision)
                self.writer.poke()
                return
            result = decision
        self.ledger.resolve(id_, subscription, result)
        self.writer.poke()

    # -- stopping and finishing ----------------------------------------------------------

    def stop(self, why: Stop) -> None:
        """Start nothing more: pushes waiting for a slot give up (to a retry job after a
        deadline, dropped after a cancel); requests on the wire complete."""
        if self.stopped is None:
            self.stopped = why
            self.rt.sender.withdraw(self)

    async def finish(self) -> None:
        """After every push settled: hand what is left to a retry job, write it all, and
        mark the unit finished (which may finish the campaign)."""
        if self.stopped is not Stop.CANCELLED:
            self._enqueue_retry()
        await self.writer.flush()
        write_upkeep(self.rt, self.campaign_id, self.ledger.take_upkeep())
        campaigns = self.rt.store.campaigns
        summary = self.summary()
        logger.info(
            "campaign %s batch %s: %s",
            self.campaign_id,
            self.unit.id_,
            summary,
            extra={"campaign_id": self.campaign_id, **summary},
        )
        if campaigns.finish_unit(self.campaign_id, self.unit.id_):
            _finished(self.rt, self.campaign_id)
        self.release()

    def _enqueue_retry(self) -> None:
        """One delayed job carrying only the ids to try again (the rest is never touched again)."""
        retries = self.ledger.retries
        if not retries:
            return
        unit, next_attempt = self.unit, self.unit.attempt + 1
        self.rt.store.campaigns.plan_units(self.campaign_id, [unit_id(unit.start, next_attempt)])
        ids = list(retries)
        enqueue_retry(
            self.rt.queue,
            self.campaign_id,
            unit.start,
            unit.end,
            next_attempt,
            ids,
            self.ledger.retry_delay,
            [retries[id_] for id_ in ids],
        )
        logger.info(
            "campaign %s unit %s: %d to retry in %.0fs",
            self.campaign_id,
            unit.id_,
            len(ids),
            self.ledger.retry_delay,
            extra={"campaign_id": self.campaign_id, "unit": unit.id_, "retry": len(ids)},
        )

    def renew_lease(self) -> None:
        self.rt.store.campaigns.renew_lease(self.campaign_id, self.unit.id_, self.token, LEASE_TTL)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.rt.store.campaigns.release_lease(self.campaign_id, self.unit.id_, self.token)

    def summary(self) -> dict[str, Any]:
        return {"campaign": self.campaign_id, "unit": self.unit.id_, **self.ledger.totals}


def write_upkeep(rt: Runtime, campaign_id: str, upkeep: Upkeep) -> None:
    """The writes that may lag a second: expired subscriptions deleted, refusal streaks,
    metrics and log lines."""
    store = rt.store
    subscriptions = store.subscriptions
    for id_, subscription in upkeep.expired:
        subscriptions.delete_if_unchanged(id_, subscription)
    now = time.time()
    for id_, subscription in upkeep.refused:
        subscriptions.record_permanent_failure(id_, subscription, now)
    subscriptions.clear_failures(upkeep.recovered)
    store.metrics.record_pushes(upkeep.tally)
    log_push_problems(logger, campaign_id, upkeep.tally.problems)


def _finished(rt: Runtime, campaign_id: str) -> None:
    """This batch finished the campaign: observe how long it took, say so in the log."""
    campaign = rt.store.campaigns.get(campaign_id) or {}
    if campaign.get("started_at") and campaign.get("finished_at"):
        rt.store.metrics.observe_campaign_duration(campaign["finished_at"] - campaign["started_at"])
    counts = {name: campaign.get(name) for name in ("targeted", "sent", "failed", "expired", "skipped")}
    logger.info("campaign %s done: %s", campaign_id, counts, extra={"campaign_id": campaign_id, **counts})
