"""Per-origin lanes: each push service gets its own queue, concurrency limit, pause and
circuit breaker, so one that hangs, throttles or answers slowly holds back only its own
subscribers.

Why lanes: with one in-flight limit shared by every origin, requests waiting out the
read timeout of a push service that stopped answering fill every slot and the healthy
services' pushes queue behind them (the stall that took down Mastodon's delivery
workers, mastodon#26115). Here a request can only wait for a slot of its own origin;
`STORYPUSH_MAX_IN_FLIGHT` is only the worker's total, a safety ceiling.

Why AIMD (additive increase, multiplicative decrease, with TCP's slow start) and not a
gradient limiter (Netflix concurrency-limits' Gradient2, Envoy's adaptive concurrency):
a gradient limiter steers by the ratio of the latency it sees to the lowest it has seen,
and the latency a sender sees includes the time an answer waits in its own busy event
loop, which is exactly what grows when we do well (a full core). At loopback-like
latencies that ratio is noise. Push services, on the other hand, say plainly when they
want less: 429 / 503 / WNS 406 with `Retry-After`, timeouts, refused connects. AIMD
reacts to those signals and nothing else; latency and our own CPU only decide whether a
lane may *grow* (while its cohorts' median latency stays within `latency_tolerance` of
the lowest recent one, and no lane grows while the worker's core is already busy), so
limits stop where more concurrency would no longer buy throughput. Latency is judged a
cohort of requests at a time, never answer by answer (see `_Cohort`): push services'
answers are spread out, and against the fastest answer seen nearly every answer looks
slow (a lane stayed near 100 in flight at a 150 ms median, σ 0.5: 0.36× pywebpush).

A concurrency limit alone cannot keep a fast-answering origin under a *rate* limit (at
40 ms per answer even 5 requests in flight are 125 a second), so a throttled lane also
paces itself: from the second throttle on it knows how many pushes the origin took
between two throttles, sends no faster than that, and creeps up by one push a second per
second, so it finds the origin's rate again after a quota resets. A lane that has not been
throttled for `pace_for` seconds stops pacing.

Plain policy with no I/O: `workers.delivery` does the HTTP and reports each answer here
as a `Signal`. Everything runs on the worker's one event loop, so there are no locks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Protocol

logger = logging.getLogger(__name__)


class LaneState(StrEnum):
    """What operators see per origin (dashboard, `/metrics`)."""

    OPEN = "open"  # sending; the limit adapts to the answers
    THROTTLED = "throttled"  # paused until the push service's Retry-After
    CIRCUIT_OPEN = "circuit_open"  # unreachable: its pushes go to a delayed retry
    PROBING = "probing"  # one probe request decides whether the circuit closes


class Signal(Enum):
    """What one request told us about its origin."""

    FAST = "fast"  # a 2xx
    ANSWERED = "answered"  # any other answer that is not a throttle: the origin is alive
    OVERLOADED = "overloaded"  # 503 without Retry-After: send less, no pause
    THROTTLED = "throttled"  # 429, WNS 406, 503 with Retry-After: send less and pause
    DEVICE_THROTTLED = "device_throttled"  # a 429/406 about one subscription: the origin is fine
    UNREACHABLE = "unreachable"  # timeout, refused or failed connect, reset, TLS failure


@dataclass(frozen=True, slots=True)
class Deferral:
    """The lane will not send this push now: hand it to a delayed retry (not an attempt)."""

    reason: str  # "circuit_open", "throttled", or "withdrawn" (its owner stopped: see `withdraw`)
    retry_after: float


WITHDRAWN = Deferral("withdrawn", 0.0)


class Waiter(Protocol):
    """A push waiting in a lane. The lane calls exactly one of the two, once; neither may
    call back into the lanes synchronously (schedule that work with `loop.call_soon`)."""

    owner: object  # who can withdraw it (a batch); None for nobody
    done: bool  # set once granted or deferred

    def granted(self) -> None:
        """A slot is held for it: give it back with `Lanes.settle` or `Lanes.release`."""

    def deferred(self, deferral: Deferral) -> None:
        """The lane will not send it (or its owner withdrew it)."""


class _FutureWaiter:
    """`admit`'s waiter: resolves a future, for callers that await a slot."""

    __slots__ = ("done", "future", "owner")

    def __init__(self, future: asyncio.Future[Deferral | None], owner: object):
        self.future, self.owner, self.done = future, owner, False

    def granted(self) -> None:
        self.done = True
        self.future.set_result(None)

    def deferred(self, deferral: Deferral) -> None:
        self.done = True
        self.future.set_result(deferral)


@dataclass(frozen=True)
class LanePolicy:
    """Limits and timings of every lane, checked when built (like rq's `Retry`), so a bad
    setting fails at start-up rather than mid-send.

    Args:
        ceiling: requests in flight over all lanes of the worker (STORYPUSH_MAX_IN_FLIGHT).
        initial_limit: a new lane's limit (and a lane's after its circuit closes again).
        first_contact: requests in flight to an origin that has never answered yet, so a
            dead or hanging one is tried by a few requests, not by a whole limit's worth.
        decrease: the limit is multiplied by this on a throttle or an unreachable origin.
        latency_tolerance: the limit grows while the median latency of the lane's last
            cohort (`_Cohort`) is at most this many times the lowest cohort median of the
            last 10 to 20 seconds (its floor), plus `latency_slack` seconds.
        slow_start_tolerance: a cohort within this many times the floor is "flat": each 2xx
            then grows the limit by one in slow start (doubling it each round trip) and by
            a quarter after it (×1.25 a round trip); a slower but tolerable cohort lets it
            grow by one a round trip. Slow start ends at the first cut, or once two
            cohorts in a row are not flat (HyStart++'s idea, RFC 9406: latency rises a
            round before anything is dropped).
        busy_cpu: no lane grows while the worker uses at least this share of its core
            (smoothed over about a quarter second). Lanes are not slowed down before
            that: more answers per turn of the event loop cost less CPU each, which
            outweighs the TLS handshake (~1 ms of CPU) an extra connection costs (measured:
            damping growth from three quarters of the core on gave fewer connections but
            more CPU per push and a lower rate at both 40 and 150 ms).
        failure_threshold: consecutive unreachable requests that open a lane's circuit.
        open_for / max_open_for: the first pause of an open circuit, doubled (up to the
            maximum) each time the probe fails too.
        max_pause_wait: a lane paused for longer than this defers its pushes to a delayed
            retry job instead of holding them in the batch.
        default_pause / max_default_pause: a 429 without Retry-After pauses this long,
            doubling on each further 429 without one, up to the maximum.
        throttle_share: a 429 or 406 *without* Retry-After is taken as the origin's
            throttle (cut, pause, pace) only while at least this share of the lane's recent
            answers (an average over the last ~16) were throttles; a lone one among 2xx is
            most likely about one device (Apple: "too many requests for the same device
            token"; FCM has per-device rates too), and its push is tried again by itself.
            Why: one device that answers 429 to every push, among 6,000 subscribers of one
            push service, kept that push service's lane paused, and 200 of the others were
            still waiting after 90 s. A push service that throttles everyone answers
            throttles to most requests, and from the fifth in a row the lane pauses.
        pace_for: a lane paces its sends for this long after its last throttle.
        idle_decay: a lane's limit halves for each whole period of this many seconds it
            was idle (nothing in flight or waiting), down to `initial_limit`, and slow
            start may regrow it to where it was (RFC 7661's "non-validated period" of 5
            minutes). Why: a limit learned an hour ago says nothing about the push
            service now, and without it a quiet worker's next campaign would put its
            whole old limit (1,000 and more at 150 ms) on the wire at once, to an origin
            that may since have started to hang.
        max_lanes: lanes (and their connection pools) kept; the least recently used idle
            one is dropped beyond this.
    """

    ceiling: int = 2000
    initial_limit: int = 64
    first_contact: int = 4
    decrease: float = 0.5
    latency_tolerance: float = 2.0
    slow_start_tolerance: float = 1.25
    latency_slack: float = 0.005
    busy_cpu: float = 0.9
    failure_threshold: int = 4
    open_for: float = 15.0
    max_open_for: float = 300.0
    max_pause_wait: float = 5.0
    default_pause: float = 1.0
    max_default_pause: float = 60.0
    throttle_share: float = 0.25
    pace_for: float = 30.0
    idle_decay: float = 300.0
    max_lanes: int = 1024

    def __post_init__(self) -> None:
        problems = []
        if self.ceiling < 1:
            problems.append("ceiling must be at least 1")
        if self.initial_limit < 1 or self.first_contact < 1:
            problems.append("initial_limit and first_contact must be at least 1")
        if not 0 < self.decrease < 1:
            problems.append("decrease must be between 0 and 1")
        if not 1 <= self.slow_start_tolerance <= self.latency_tolerance or self.latency_slack < 0:
            problems.append("need 1 <= slow_start_tolerance <= latency_tolerance and latency_slack >= 0")
        if not 0 < self.busy_cpu <= 1:
            problems.append("busy_cpu must be in (0, 1]")
        if self.failure_threshold < 1:
            problems.append("failure_threshold must be at least 1")
        if not 0 < self.open_for <= self.max_open_for:
            problems.append("open_for must be positive and at most max_open_for")
        if self.max_pause_wait < 0 or not 0 < self.default_pause <= self.max_default_pause:
            problems.append("pauses must be positive, default_pause at most max_default_pause")
        if not 0 <= self.throttle_share <= 1:
            problems.append("throttle_share must be in [0, 1]")
        if self.pace_for <= 0 or self.idle_decay <= 0:
            problems.append("pace_for and idle_decay must be positive")
        if self.max_lanes < 1:
            problems.append("max_lanes must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))


# How often the worker's CPU share is read (a syscall), and how long a latency floor lasts.
_CPU_SAMPLE = 0.05
_CPU_SMOOTHING = 0.5  # weight of the newest sample in the moving average
_FLOOR_WINDOW = 10.0
_PACE_SAMPLE = 1.0  # seconds of 2xx counted, at least, before a throttled lane sets its pace
_SHARE_WEIGHT = 1 / 16  # of the newest answer in a lane's moving share of throttles
# Cohorts (see `_Cohort`): at least this many requests each; at most this many open at once
# per lane (an older one, too many of whose requests never settled, is dropped unjudged).
_COHORT_MIN = 64
_COHORTS_OPEN = 8
# Nothing in flight for this long and a lane's next push starts afresh (see `_back_from_idle`):
# far longer than a gap between two batches of one campaign, far shorter than one between
# two campaigns.
_QUIET = 1.0


@dataclass(slots=True)
class LaneSnapshot:
    """A lane as operators see it (`origin` is the push service's label, as in /metrics)."""

    origin: str
    state: LaneState
    limit: int
    in_flight: int
    queued: int


class Latency(Enum):
    """A lane's latency now, against its recent floor: what its last cohort showed."""

    FLAT = "flat"  # within `slow_start_tolerance`: more in flight costs no latency
    RISEN = "risen"  # within `latency_tolerance`: grow carefully (one a round trip)
    HIGH = "high"  # beyond it: do not grow


class _Cohort:
    """Requests a lane sent one after another (a limit's worth, at least `_COHORT_MIN`),
    judged together by their median latency, exactly, as soon as it is known.

    Why cohorts and not single answers: push services' latencies are spread out (a tenth of
    answers twice the median or slower is ordinary), so one answer compared with the
    fastest seen says nothing. Why not "the answers that came back first" either: those
    are the fastest of what was sent, not a sample of it, and how much faster depends on
    how the sends were spread out (in a model of one lane, the first such judgement after
    slow start began read a tenth to a third below the true median, so every later one
    looked slow).
    A cohort's median is its sample's own: once half its requests are answered within
    `m` seconds, and its last request went out at least `m` seconds ago, nothing still
    pending can come in under `m` (every one of them has been out longer than that)."""

    __slots__ = ("known_after", "last", "rtts", "sent", "start")

    def __init__(self, start: float):
        self.start = self.last = start  # its first and its last send
        self.sent = 0
        self.rtts: list[float] = []  # of its answered requests
        self.known_after = 0.0  # its median is no higher than this (rechecked once it has passed)

    def median(self, now: float) -> float | None:
        """Its median latency, once it is known (None before)."""
        half = self.sent // 2 + 1
        if len(self.rtts) < half or now - self.last < self.known_after:
            return None
        self.rtts.sort()
        self.known_after = self.rtts[half - 1]  # only falls as more answers come in
        return self.known_after if now - self.last >= self.known_after else None


class Lane:
    """One push-service origin: its waiting pushes, limit, pause and circuit."""

    def __init__(self, origin: str, label: str, policy: LanePolicy):
        self.origin, self.label = origin, label
        self.limit = float(policy.initial_limit)
        self.slow_start_until = float(policy.ceiling)  # "ssthresh": slow start below it
        self.in_flight = 0
        self.waiters: deque[Waiter] = deque()
        self.paused_until = 0.0
        self.pauses_without_header = 0
        self.throttles = 0.0  # share of its recent answers that were throttles (moving average)
        self.throttled_at: float | None = None  # the throttle its pace is counted from (see `_pace`)
        self.taken_since = 0  # pushes the origin took (2xx) since then
        self.rate: float | None = None  # pushes a second while pacing, None: not pacing
        self.next_send = 0.0
        self.cut_at = -math.inf  # when the limit was last cut (one cut per window of requests)
        # the lowest cohort median in this and the last `_FLOOR_WINDOW`
        self.floor_now, self.floor_before, self.floor_since = math.inf, math.inf, -math.inf
        self.cohorts: deque[_Cohort] = deque()  # open ones, oldest first; the last takes new sends
        self.latency = Latency.FLAT  # as the last cohort judged it (see `_judge`)
        self.last_median = math.inf  # that cohort's median latency
        self.round_left = 0.0  # answers left in this round trip
        self.round_started, self.round_limit, self.round_rate = 0.0, 0.0, 0.0  # when, at what limit, 2xx/s
        # a bigger limit stopped buying more 2xx a second (then at this rate): grow by one a
        # round trip until a round brings a tenth more than that
        self.plateau: float | None = None
        self.failures = 0  # consecutive unreachable requests
        self.circuit_open_until: float | None = None  # None: circuit closed
        self.open_for = policy.open_for
        self.probing = False
        self.timer: asyncio.TimerHandle | None = None
        # (the sender keeps its connection pool on the lane; evicting a lane closes it)
        self.on_evict: Callable[[], None] | None = None
        self.reached = False  # has it ever answered at all? Until then only a few requests fly
        self.active_at = 0.0  # when a request of it last ended (answered, failed or unsent)

    def state(self, now: float) -> LaneState:
        if self.probing:
            return LaneState.PROBING
        if self.circuit_open_until is not None:
            return LaneState.CIRCUIT_OPEN
        if self.paused_until > now:
            return LaneState.THROTTLED
        return LaneState.OPEN

    def snapshot(self, now: float) -> LaneSnapshot:
        queued = sum(1 for waiter in self.waiters if not waiter.done)
        return LaneSnapshot(self.label, self.state(now), int(self.limit), self.in_flight, queued)

    @property
    def idle(self) -> bool:
        return not self.in_flight and not self.waiters


_GO = None  # a slot is taken
_WAIT = object()  # wait for a slot or for the pause to end
_WAIT_CEILING = object()  # wait for a slot anywhere in the worker
_PROBE = object()  # the circuit's cool-down is over: this request is the probe


class Lanes:
    """Every lane of one worker process, and the ceiling they share.

    `admit()` waits for a slot (or answers a `Deferral`), `settle()` gives it back with
    what the answer said, and the lane adapts. Waiting pushes are served first come,
    first served within a lane; a throttled push that is sent again goes to the front.
    """

    def __init__(
        self,
        policy: LanePolicy,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ):
        self.policy = policy
        self.clock, self.cpu_clock = clock, cpu_clock
        self.in_flight = 0
        self._lanes: OrderedDict[str, Lane] = OrderedDict()
        self._blocked: deque[Lane] = deque()  # lanes waiting for room under the ceiling
        self._active: set[Lane] = set()  # lanes with requests in flight or waiting: they share the ceiling
        self._cpu_mark = (clock(), cpu_clock())
        self.cpu_share = 0.0  # of one core, moving average over the last samples
        self.busy = False  # cpu_share at or past the policy's busy_cpu
        self.on_hungry: Callable[[], None] | None = None
        # (origin label, event) -> count since last taken, for /metrics (see `take_events`)
        self.events: Counter[tuple[str, str]] = Counter()
        self._withdrawn: weakref.WeakSet = weakref.WeakSet()

    # -- lanes -------------------------------------------------------------------------

    def lane(self, origin: str, label: str) -> Lane:
        lane = self._lanes.get(origin)
        if lane is not None:
            self._lanes.move_to_end(origin)
            return lane
        lane = self._lanes[origin] = Lane(origin, label, self.policy)
        if len(self._lanes) > self.policy.max_lanes:
            self._evict()
        return lane

    def _evict(self) -> None:
        """Drop the least recently used idle lane whose circuit is closed (an open circuit
        is remembered, or a dead origin would be tried afresh)."""
        for origin, lane in self._lanes.items():
            if lane.idle and lane.circuit_open_until is None:
                del self._lanes[origin]
                if lane.on_evict is not None:
                    lane.on_evict()
                return

    def __iter__(self):
        return iter(list(self._lanes.values()))

    def snapshots(self) -> list[LaneSnapshot]:
        now = self.clock()
        return [lane.snapshot(now) for lane in self._lanes.values()]

    def take_events(self) -> Counter[tuple[str, str]]:
        events, self.events = self.events, Counter()
        return events

    def wants_work(self) -> bool:
        """Would a lane that is sending run short of pushes within about one round trip?
        (A batch then takes on the campaign's next batch.) Throttled, circuit-open and
        saturated-but-silent lanes never ask for more: their backlog is not work. A full
        ceiling is no reason not to: a lane below its fair share gets the slots freed by
        one above it (`_over_share`), and must have pushes waiting to use them."""
        now = self.clock()
        return any(
            lane.state(now) is LaneState.OPEN and len(lane.waiters) < lane.limit for lane in self._lanes.values()
        )

    # -- admission ---------------------------------------------------------------------

    def enqueue(self, lane: Lane, waiter: Waiter, *, front: bool = False) -> None:
        """Queue `waiter` for a slot in `lane` (`front`: a throttled push sent again goes first).
        It is granted or deferred at once if the lane can tell now."""
        if waiter.owner is not None and waiter.owner in self._withdrawn:
            waiter.deferred(WITHDRAWN)
            return
        if not lane.in_flight and not lane.waiters:
            self._back_from_idle(lane, self.clock())
        if front or not lane.waiters:
            verdict = self._verdict(lane, self.clock())
            if verdict is _GO or verdict is _PROBE:
                self._take(lane, verdict)
                waiter.granted()
                return
            if isinstance(verdict, Deferral):
                waiter.deferred(verdict)
                return
        if front:
            lane.waiters.appendleft(waiter)
        else:
            lane.waiters.append(waiter)
        self._active.add(lane)
        self._pump(lane)

    async def admit(self, lane: Lane, *, front: bool = False, owner: object = None) -> Deferral | None:
        """Wait for a slot in `lane`: None once one is held (give it back with `settle`
        or `release`), or a `Deferral` when the lane will not send for a while (or when
        `owner` withdrew its pushes)."""
        waiter = _FutureWaiter(asyncio.get_running_loop().create_future(), owner)
        self.enqueue(lane, waiter, front=front)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            waiter.done = True  # skipped if still queued
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result() is None:
                self.release(lane)  # granted, but cancelled before it could use the slot
            raise

    def withdraw(self, owner: object) -> None:
        """`owner`'s pushes waiting for a slot give up (deferred as `WITHDRAWN`), and so does
        any it queues later; its requests already on the wire are not touched."""
        self._withdrawn.add(owner)
        for lane in list(self._lanes.values()):
            withdrawn = [waiter for waiter in lane.waiters if waiter.owner is owner and not waiter.done]
            for waiter in withdrawn:
                waiter.deferred(WITHDRAWN)

    def _verdict(self, lane: Lane, now: float) -> object:
        policy = self.policy
        if lane.probing:
            return Deferral("circuit_open", lane.open_for)
        if lane.circuit_open_until is not None:
            if now < lane.circuit_open_until:
                return Deferral("circuit_open", lane.circuit_open_until - now)
            return _PROBE if self.in_flight < policy.ceiling else _WAIT_CEILING
        pause = lane.paused_until - now
        if pause > 0:
            return Deferral("throttled", pause) if pause > policy.max_pause_wait else _WAIT
        if lane.in_flight >= (lane.limit if lane.reached else min(lane.limit, policy.first_contact)):
            return _WAIT
        if lane.rate is not None and lane.next_send > now:
            return _WAIT
        if self.in_flight >= policy.ceiling or (self._blocked and self._over_share(lane)):
            return _WAIT_CEILING
        return _GO

    def _over_share(self, lane: Lane) -> bool:
        """Does `lane` hold its fair share of the ceiling while another lane, below its own,
        waits for room? Then the slot goes to that one (max-min fairness). Why: a push
        service that answers slowly but surely keeps every slot it gets for as long as it
        takes; were freed slots first come, first served, it would end up holding the whole
        ceiling and the other origins would wait on it."""
        share = self.policy.ceiling / max(1, len(self._active))
        return lane.in_flight >= share and any(other is not lane and other.in_flight < share for other in self._blocked)

    def _take(self, lane: Lane, verdict: object) -> None:
        lane.in_flight += 1
        self.in_flight += 1
        self._active.add(lane)
        if lane.rate is not None:
            now = self.clock()
            if lane.throttled_at is not None and now - lane.throttled_at > self.policy.pace_for:
                lane.rate = None  # no throttle for a while: back to the concurrency limit alone
            else:
                lane.next_send = max(lane.next_send, now) + 1 / lane.rate
                lane.rate += 1 / lane.rate  # +1 push/s each second
        if verdict is _PROBE:
            lane.probing = True
            logger.info("lane %s: probing after its circuit was open", lane.label, extra={"origin": lane.label})

    def _pump(self, lane: Lane) -> None:
        """Hand free slots (or deferrals) to the lane's waiters, in order."""
        while lane.waiters:
            waiter = lane.waiters[0]
            if waiter.done:  # cancelled or withdrawn while waiting
                lane.waiters.popleft()
                continue
            now = self.clock()
            verdict = self._verdict(lane, now)
            if verdict is _WAIT:
                wake = max(lane.paused_until, lane.next_send if lane.rate is not None else 0.0)
                if wake > now:
                    self._wake_at(lane, wake - now)
                return
            if verdict is _WAIT_CEILING:
                if lane not in self._blocked:
                    self._blocked.append(lane)
                return
            lane.waiters.popleft()
            if isinstance(verdict, Deferral):
                waiter.deferred(verdict)
            else:
                self._take(lane, verdict)
                waiter.granted()
        if not lane.in_flight:
            self._active.discard(lane)

    def _back_from_idle(self, lane: Lane, now: float) -> None:
        """A lane with nothing in flight or waiting gets a push. Its next round trip starts
        now: one that spanned the quiet would count few answers over a long time, look like
        "more in flight bought nothing" and end slow start. After a quiet second or more,
        what the lane concluded from its last answers is forgotten too: its latency floor
        and its plateau ("more in flight bought nothing"). Both describe the push service
        and the worker's core as they were; a push service that answers slower now (40 ms
        then, 150 ms now) would otherwise have every answer count as slower than the floor,
        or the lane grow by one a round trip, and the lane stay at the limit the old
        latency needed (measured with a running worker: 2,687 pushes/s instead of ~4,500).
        After `idle_decay` or more of quiet its limit also halves once for each such
        period, and slow start may regrow it to where it was."""
        lane.round_left, lane.round_rate = 0.0, 0.0
        lane.round_started, lane.round_limit = now, 0.0
        lane.cohorts.clear()
        quiet = now - lane.active_at
        if quiet >= _QUIET:
            lane.floor_now, lane.floor_before, lane.floor_since = math.inf, math.inf, now
            lane.plateau = None
            lane.latency, lane.last_median = Latency.FLAT, math.inf
        periods = int(quiet // self.policy.idle_decay)
        if periods >= 1 and lane.limit > self.policy.initial_limit:
            lane.slow_start_until = max(lane.slow_start_until, lane.limit)
            lane.limit = max(float(self.policy.initial_limit), lane.limit / 2 ** min(periods, 64))

    def _wake_at(self, lane: Lane, delay: float) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
        lane.timer = asyncio.get_running_loop().call_later(delay, self._pump, lane)

    def release(self, lane: Lane) -> None:
        """Give a slot back without an answer (the push was never sent)."""
        lane.active_at = self.clock()
        lane.in_flight -= 1
        self.in_flight -= 1
        if lane.probing:  # the probe was never sent: the next request probes instead
            lane.probing = False
        self._after_release(lane)

    def _after_release(self, lane: Lane) -> None:
        self._pump(lane)
        for _ in range(len(self._blocked)):  # each once: a lane over its share goes back in line
            if self.in_flight >= self.policy.ceiling:
                break
            self._pump(self._blocked.popleft())
        if self.on_hungry is not None and len(lane.waiters) < lane.limit and lane.circuit_open_until is None:
            self.on_hungry()

    # -- what the answers say ----------------------------------------------------------

    def settle(
        self,
        lane: Lane,
        signal: Signal,
        *,
        rtt: float,
        sent_at: float,
        retry_after: float | None = None,
        admitted_at: float | None = None,
    ) -> None:
        """Give the slot back and adapt the lane to what its push service answered.

        Args:
            rtt: seconds from the request written to its answer (or failure).
            sent_at: `clock()` when the request was written (its latency cohort).
            retry_after: seconds the push service asked for (THROTTLED only).
            admitted_at: `clock()` when its slot was taken (default `sent_at`): a window
                of requests admitted before the last cut is not cut for again, however
                late their connections opened. Why not the write: at a new origin the
                first window's requests wait for their TLS connections, and those written
                after the first 429 came back had counted as new congestion events, each
                with its own few-pushes-over-a-tenth-of-a-second guess at the origin's rate.
        """
        now = lane.active_at = self.clock()
        lane.in_flight -= 1
        self.in_flight -= 1
        window = sent_at if admitted_at is None else admitted_at
        if signal is Signal.UNREACHABLE:
            self.events[(lane.label, "unreachable")] += 1
            self._cut(lane, window, now)
            self._unreachable(lane, now)
        else:
            self._answered(lane, now)
            self._count(lane, sent_at, rtt, now)
            throttled = signal is Signal.THROTTLED or signal is Signal.OVERLOADED
            lane.throttles += _SHARE_WEIGHT * (throttled - lane.throttles)
            if signal is Signal.FAST:
                lane.pauses_without_header = 0
                lane.taken_since += 1
                self._grow(lane, now)
            elif throttled:
                self.events[(lane.label, "throttled")] += 1
                # a lone 429 without Retry-After holds back nothing: see LanePolicy.throttle_share
                lone = signal is Signal.THROTTLED and retry_after is None
                if not lone or self.throttling(lane):
                    if self._cut(lane, window, now):
                        self._pace(lane, now)
                    if signal is Signal.THROTTLED:
                        self._pause(lane, retry_after, now)
            elif signal is Signal.DEVICE_THROTTLED:
                self.events[(lane.label, "device_throttled")] += 1
        self._after_release(lane)

    def throttling(self, lane: Lane) -> bool:
        """Are throttles common among the lane's recent answers (at least
        `throttle_share`)? Then its push service is throttling us, not one device."""
        return lane.throttles >= self.policy.throttle_share

    def sent(self, lane: Lane) -> float:
        """A request of `lane` is written now (on a connection already open: a connect's
        time is not the push service's answer time): its send time, for `settle`'s
        `sent_at`. It joins the lane's newest cohort, or starts one once that has a
        limit's worth."""
        now = self.clock()
        cohorts = lane.cohorts
        if not cohorts or (cohorts[-1].sent >= max(lane.limit, _COHORT_MIN) and now > cohorts[-1].last):
            if len(cohorts) >= _COHORTS_OPEN:
                cohorts.popleft()
            cohorts.append(_Cohort(now))
        cohort = cohorts[-1]
        cohort.sent += 1
        cohort.last = now
        return now

    def _count(self, lane: Lane, sent_at: float, rtt: float, now: float) -> None:
        """Count an answered request in the cohort it was sent in, and judge every cohort
        that takes no more sends once its median is known. (A request that got no answer
        is never counted: it stays pending, which never makes a median known too early;
        an origin that stops answering is the circuit breaker's.)"""
        cohorts = lane.cohorts
        for cohort in reversed(cohorts):
            if cohort.start <= sent_at:
                cohort.rtts.append(rtt)
                break
        index = 0
        while index < len(cohorts) - 1:
            median = cohorts[index].median(now)
            if median is None:
                index += 1
            else:
                del cohorts[index]
                self._judge(lane, median, now)

    def _judge(self, lane: Lane, latency: float, now: float) -> None:
        """A cohort's median latency against the lowest of the recent ones: flat, risen
        (growth slows to one a round trip) or high (no growth). Slow start ends once two
        cohorts in a row are not flat (HyStart++'s idea, RFC 9406: latency rises a round
        before anything is dropped). Why two: the floor is the lowest of many medians of
        samples, so one cohort in several reads a quarter above it by chance when answers
        are widely spread (σ = 1: a tenth of them 3.6× the median or slower), and ending
        slow start is for good; a verdict on growth is redone at the next cohort."""
        if now - lane.floor_since > _FLOOR_WINDOW:
            lane.floor_before, lane.floor_now, lane.floor_since = lane.floor_now, math.inf, now
        lane.floor_now = min(lane.floor_now, latency)
        floor = min(lane.floor_now, lane.floor_before)
        policy = self.policy
        flat = floor * policy.slow_start_tolerance + policy.latency_slack
        if latency <= flat:
            lane.latency = Latency.FLAT
        else:
            if lane.last_median > flat:
                lane.slow_start_until = min(lane.slow_start_until, lane.limit)
            risen = latency <= floor * policy.latency_tolerance + policy.latency_slack
            lane.latency = Latency.RISEN if risen else Latency.HIGH
        lane.last_median = latency

    def _grow(self, lane: Lane, now: float) -> None:
        policy = self.policy
        slow_start = lane.limit < lane.slow_start_until
        lane.round_left -= 1
        if lane.round_left <= 0:  # a round trip's worth of answers
            answers = lane.round_limit or 1.0
            rate = answers / max(now - lane.round_started, 1e-6)
            if lane.plateau is not None and rate >= 1.1 * lane.plateau:
                # A tenth more 2xx a second than when growth slowed: that bottleneck has
                # passed (a burst of TLS handshakes on new connections is one: in a model of
                # one worker, a plateau set during it kept a lane at 745 in flight for good
                # and the core 85 % busy).
                lane.plateau = None
            elif lane.limit >= 1.2 * answers and lane.round_rate and rate < 1.1 * lane.round_rate:
                # The limit grew by a fifth and the 2xx a second by less than a tenth: more
                # in flight buys nothing any more (our core, not the push service, is what
                # holds the lane back).
                lane.slow_start_until = min(lane.slow_start_until, lane.limit)
                slow_start = False
                if lane.plateau is None:
                    lane.plateau = rate
            lane.round_left = lane.limit
            lane.round_started, lane.round_limit, lane.round_rate = now, lane.limit, rate
        if lane.limit >= policy.ceiling or (not lane.waiters and lane.in_flight + 1 < lane.limit):
            return  # the limit is not what holds this lane back
        if lane.latency is Latency.HIGH or self._busy(now):
            return
        if lane.latency is Latency.FLAT and lane.plateau is None:
            step = 1.0 if slow_start else 0.25
        else:
            step = 1 / lane.limit  # one a round trip
        lane.limit = min(policy.ceiling, lane.limit + step)

    def _busy(self, now: float) -> bool:
        then, cpu_then = self._cpu_mark
        if now - then >= _CPU_SAMPLE:
            cpu = self.cpu_clock()
            share = (cpu - cpu_then) / (now - then)
            self.cpu_share += _CPU_SMOOTHING * (share - self.cpu_share)
            self.busy = self.cpu_share >= self.policy.busy_cpu
            self._cpu_mark = (now, cpu)
        return self.busy

    def _cut(self, lane: Lane, sent_at: float, now: float) -> bool:
        """Cut the limit, once per congestion event; True if this was a new one."""
        if sent_at < lane.cut_at:
            return False  # this request was in flight when the limit was cut: same congestion event
        lane.limit = max(1.0, lane.limit * self.policy.decrease)
        lane.slow_start_until = lane.limit
        lane.cut_at = now
        lane.plateau = None
        return True

    def _pace(self, lane: Lane, now: float) -> None:
        """A new throttle: pace at what the origin took since an earlier one (at least one
        push a second), never faster than the pace it just refused. The count runs over
        at least `_PACE_SAMPLE`: the pace only ever falls to a guess and creeps back up
        by one push a second per second, and a guess from a few pushes over a tenth of a
        second is noise (2 pushes in 0.07 s read as 28 a second from an origin that took
        50: its 1,000 pushes then took 27–37 s instead of 20)."""
        if lane.throttled_at is not None:
            elapsed = now - lane.throttled_at
            if elapsed < _PACE_SAMPLE:
                return  # keep counting from the earlier throttle
            taken = max(1.0, lane.taken_since / elapsed)
            lane.rate = taken if lane.rate is None else min(lane.rate, taken)
        lane.throttled_at, lane.taken_since = now, 0

    def _pause(self, lane: Lane, retry_after: float | None, now: float) -> None:
        if retry_after is None:
            policy = self.policy
            retry_after = min(policy.max_default_pause, policy.default_pause * 2**lane.pauses_without_header)
            lane.pauses_without_header += 1
        if now + retry_after > lane.paused_until:
            if lane.paused_until <= now:
                logger.info(
                    "lane %s: throttled for %.1fs",
                    lane.label,
                    retry_after,
                    extra={"origin": lane.label, "retry_after": retry_after},
                )
            lane.paused_until = now + retry_after

    def _answered(self, lane: Lane, now: float) -> None:
        """Any answer means the origin is reachable: close its circuit."""
        lane.failures = 0
        lane.reached = True  # its whole limit applies from now on (`settle` then pumps)
        if lane.circuit_open_until is not None or lane.probing:
            lane.circuit_open_until, lane.probing = None, False
            lane.open_for = self.policy.open_for
            lane.limit = float(self.policy.initial_limit)
            lane.slow_start_until = float(self.policy.ceiling)
            logger.info("lane %s: circuit closed, sending again", lane.label, extra={"origin": lane.label})

    def _unreachable(self, lane: Lane, now: float) -> None:
        lane.failures += 1
        if lane.probing:
            lane.probing = False
            lane.open_for = min(self.policy.max_open_for, lane.open_for * 2)
            self._open(lane, now, "its probe failed too")
        elif lane.circuit_open_until is None and lane.failures >= self.policy.failure_threshold:
            self._open(lane, now, f"{lane.failures} requests in a row failed")

    def _open(self, lane: Lane, now: float, why: str) -> None:
        lane.circuit_open_until = now + lane.open_for
        self.events[(lane.label, "circuit_opened")] += 1
        logger.warning(
            "lane %s: circuit open for %.0fs (%s); its pushes go to a delayed retry",
            lane.label,
            lane.open_for,
            why,
            extra={"origin": lane.label, "open_for": lane.open_for},
        )
        self._wake_at(lane, lane.open_for)  # so pushes that wait then start the probe
