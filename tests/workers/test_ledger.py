"""The ledger alone: what a batch's outcomes add up to, and what is written when."""

from __future__ import annotations

from service.subscriptions import Subscription
from workers.delivery import Outcome, Result
from workers.ledger import Ledger
from workers.retry import Retry

SUB = Subscription("https://fcm.googleapis.com/fcm/send/x", b"\x04" + b"\x01" * 64, b"a" * 16)


def test_final_outcomes_are_marked_and_counted_with_their_reasons():
    ledger = Ledger(failing={3})
    ledger.resolve(1, SUB, Result(Outcome.SENT, "sent", 201, elapsed=0.04, origin="fcm"))
    ledger.resolve(2, SUB, Result(Outcome.EXPIRED, "http_410", 410, elapsed=0.04, origin="fcm"))
    ledger.resolve(3, SUB, Result(Outcome.SENT, "sent", 201, elapsed=0.04, origin="fcm"))
    ledger.resolve(4, SUB, Result(Outcome.FAILED, "http_403", 403, elapsed=0.04, refusal=True, origin="fcm"))
    ledger.resolve(5, SUB, Result(Outcome.FAILED, "timeout_gave_up", origin="fcm"))
    ledger.resolve(6, None, Result(Outcome.EXPIRED, "unsubscribed"))
    marks = ledger.take_marks()
    assert marks.resolved == [1, 2, 3, 4, 5, 6]
    assert marks.counts == {"sent": 2, "expired": 2, "failed": 2}
    assert marks.errors == {"http_410": 1, "http_403": 1, "timeout_gave_up": 1, "unsubscribed": 1}
    upkeep = ledger.take_upkeep()
    assert [id_ for id_, _ in upkeep.expired] == [2]  # the push service said so; "unsubscribed" is gone already
    assert [id_ for id_, _ in upkeep.refused] == [4]  # the timeout does not count against anyone
    assert upkeep.recovered == [3]
    assert upkeep.tally.results[("sent", "fcm")] == 2 and upkeep.tally.pushes == 4
    assert not ledger.take_marks()  # taken once


def test_deferred_pushes_go_to_the_retry_job_with_their_attempts_and_the_longest_delay():
    ledger = Ledger()
    ledger.defer(7, Result(Outcome.RETRY, "http_500", 500), Retry(5.0, 1))
    ledger.defer(8, Result(Outcome.RETRY, "throttled", attempted=False), Retry(120.0, 0))
    assert ledger.retries == {7: 1, 8: 0} and ledger.retry_delay == 120.0
    assert ledger.take_marks().counts == {"retrying": 2}


def test_a_retry_unit_settles_each_earlier_retrying_count_once():
    ledger = Ledger(retrying=True)
    ledger.resolve(7, SUB, Result(Outcome.SENT, "sent", 201, origin="fcm"))
    ledger.defer(8, Result(Outcome.RETRY, "http_500", 500), Retry(10.0, 2))
    counts = ledger.take_marks().counts
    # both were counted as retrying; 7 is done (-1) and 8 is retrying still (-1 +1)
    assert counts == {"sent": 1, "retrying": -1}
