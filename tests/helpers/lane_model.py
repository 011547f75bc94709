"""A push service and one lane on a simulated clock: how a lane's limit moves over whole
round trips of answers whose latencies are drawn from a distribution, in milliseconds of
test time rather than seconds of real time. No CPU is modelled (the core never counts as
busy), so only the push service's answers steer the lane."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.lanes import Deferral, LanePolicy, Lanes, Signal


@dataclass
class Model:
    """`latency(in_flight)`: seconds until the push service answers a request sent while
    `in_flight` requests of the lane were on the wire (spread, queueing: whatever the test
    wants). Every answer is a 2xx."""

    latency: Callable[[int], float]
    policy: LanePolicy = field(default_factory=LanePolicy)
    now: float = 1000.0

    def __post_init__(self) -> None:
        self.lanes = Lanes(self.policy, clock=lambda: self.now, cpu_clock=lambda: 0.0)
        self.lane = self.lanes.lane("https://push.example", "push.example")
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def run(self, pushes: int, until: float) -> list[tuple[float, float]]:
        """Queue `pushes` and play the answers for `until` seconds (or until all are
        answered): the lane's limit after each answer, as (seconds since start, limit)."""
        asyncio.set_event_loop(asyncio.new_event_loop())  # for the lanes' timers (none here)
        start, path = self.now, []
        model = self

        class Push:
            owner, done = None, False

            def granted(self) -> None:
                self.done = True
                sent_at = model.lanes.sent(model.lane)
                model._at(model.now + model.latency(model.lane.in_flight), lambda: model._answer(sent_at))

            def deferred(self, deferral: Deferral) -> None:
                raise AssertionError(f"a push was deferred: {deferral}")

        for _ in range(pushes):
            self.lanes.enqueue(self.lane, Push())
        while self._events and self._events[0][0] - start <= until:
            self.now, _, answer = heapq.heappop(self._events)
            answer()
            path.append((self.now - start, self.lane.limit))
        return path

    def _at(self, when: float, what: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), what))

    def _answer(self, sent_at: float) -> None:
        self.lanes.settle(self.lane, Signal.FAST, rtt=self.now - sent_at, sent_at=sent_at)


def log_normal(median: float, sigma: float, seed: int = 7) -> Callable[[int], float]:
    """Answers spread log-normally around `median` (σ 0.5: a tenth of them slower than
    1.9× it, as real push services answer), whatever is in flight."""
    draw = random.Random(seed).gauss
    return lambda _in_flight: median * math.exp(sigma * draw(0.0, 1.0))


def limit_at(path: list[tuple[float, float]], seconds: float) -> float:
    """The limit `seconds` into a run (as the last answer before then left it)."""
    return next((limit for at, limit in reversed(path) if at <= seconds), 0.0)
