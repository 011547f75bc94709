"""What one batch unit's pushes came to, kept in memory until it is written.

Plain bookkeeping with no Redis, so it can be tested alone: the batch records each
outcome here and the dispatcher takes two kinds of writes from it. `take_marks` is
what a re-run must see (which ids are resolved, and the campaign counters that go with
them): written as answers arrive. `take_upkeep` is what can wait a second (deleting
expired subscriptions, refusal streaks, metrics, log lines).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from service.store.metrics_store import PushTally
from service.subscriptions import Subscription

from .delivery import Outcome, Result
from .retry import Retry


@dataclass
class Marks:
    """Resolved ids and the counters that go with them (written together)."""

    resolved: list[int] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.resolved or self.counts or self.errors)


@dataclass
class Upkeep:
    """Writes that may lag: subscriptions to delete or mark, and metrics."""

    expired: list[tuple[int, Subscription]] = field(default_factory=list)
    refused: list[tuple[int, Subscription]] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)  # succeeded after a refusal streak
    tally: PushTally = field(default_factory=PushTally)

    def merge(self, other: Upkeep) -> None:
        """Add another unit's upkeep, so several batches are written in one go."""
        self.expired += other.expired
        self.refused += other.refused
        self.recovered += other.recovered
        self.tally.merge(other.tally)


class Ledger:
    """Outcomes of one unit (a batch, or a retry of some of its ids).

    Args:
        failing: ids with a refusal streak, cleared by their next success.
        retrying: this unit retries ids an earlier unit counted as "retrying", so each
            settles that count once, whatever becomes of it now.
    """

    def __init__(self, failing: set[int] = frozenset(), retrying: bool = False):  # type: ignore[assignment]
        self.failing = failing
        self.retrying = retrying
        self.retries: dict[int, int] = {}  # id -> attempts used, for the retry job
        self.retry_delay = 0.0
        self.totals: Counter[str] = Counter()  # for the job's summary
        self._marks = Marks()
        self._upkeep = Upkeep()

    def _count(self, name: str, value: int = 1) -> None:
        self._marks.counts[name] += value
        self.totals[name] += value

    def _settle(self) -> None:
        if self.retrying:
            self._count("retrying", -1)

    def resolve(self, id_: int, subscription: Subscription | None, result: Result) -> None:
        """A final outcome: sent, expired, failed or skipped (never sent again)."""
        self._settle()
        self._marks.resolved.append(id_)
        outcome, upkeep = result.outcome, self._upkeep
        if outcome is Outcome.SENT:
            self._count("sent")
            if id_ in self.failing:
                upkeep.recovered.append(id_)
        else:
            self._count(outcome.value)
            self._marks.errors[result.reason] += 1
            if subscription is not None and outcome is Outcome.EXPIRED and result.status is not None:
                upkeep.expired.append((id_, subscription))
            elif subscription is not None and result.refusal:
                upkeep.refused.append((id_, subscription))
        upkeep.tally.add(result.origin, outcome.value, result.elapsed, result.reason, result.status)

    def defer(self, id_: int, result: Result, retry: Retry) -> None:
        """Not sent yet: hand the id to the unit's retry job."""
        self._settle()
        self.retries[id_] = retry.attempts
        self.retry_delay = max(self.retry_delay, retry.delay)
        self._count("retrying")
        self._upkeep.tally.add(result.origin, "retry", result.elapsed, result.reason, result.status)

    def take_marks(self) -> Marks:
        marks, self._marks = self._marks, Marks()
        return marks

    def take_upkeep(self) -> Upkeep:
        upkeep, self._upkeep = self._upkeep, Upkeep()
        return upkeep
