"""Push delivery: the seam between the jobs and the push services.

Callers see `Sender.send(subscription, plaintext, headers) -> Result` and count
outcomes; encryption, VAPID, connections, status codes and the per-origin lanes
(`workers.lanes`: queue, adaptive limit, Retry-After pause, circuit breaker) stay in
here. A push the lane holds back for a moment (a short Retry-After) waits in its lane
and is sent again; one it holds back for longer comes back as a RETRY that is "not yet"
(`attempted=False`), not a failed attempt.

The HTTP itself is a small hand-written HTTP/1.1 client (`workers.http1`, and
`workers.addresses` for a short-lived cache of each origin's addresses); this module
says what its answers mean. Redirects are never followed (a 3xx is a failure) and proxy
variables are never read: a push endpoint is a capability URL for exactly that host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from service.endpoints import InvalidEndpoint, PushEndpoint, parse_endpoint
from service.retry_after import parse_retry_after
from service.subscriptions import Subscription

from .addresses import AddressCache
from .http1 import READ_TIMEOUT, Connection, Pool, default_ssl_context
from .lanes import Deferral, Lane, LanePolicy, Lanes, Signal
from .message import PushHeaders
from .webpush import VapidHeaders, encrypt

logger = logging.getLogger(__name__)

# A host whose name does not exist counts against its subscriptions only while other
# origins connect fine (then it is the endpoint that is junk, not our resolver).
RESOLVER_TRUSTED_FOR = 600.0
# A push throttled for its own subscription's sake (see `classify`) is tried again after
# this long: a device over its quota gets nothing sooner, and each try costs a request.
DEVICE_THROTTLE_DELAY = 60.0


class Outcome(StrEnum):
    SENT = "sent"
    EXPIRED = "expired"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"  # never sent: the subscriber's quiet hours or daily cap (service.targeting)


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one push.

    `attempted` is False for a push the push service never took ("not yet": its origin is
    throttled or its circuit open): it costs none of the push's attempts. `refusal` marks
    a failure that is the subscription's own (a 4xx refusal, a host that does not exist),
    which counts towards deleting it; timeouts and outages never do.
    """

    outcome: Outcome
    reason: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from the push service's Retry-After or the lane
    elapsed: float | None = None  # seconds from request written to answer parsed, for metrics
    attempted: bool = True
    refusal: bool = False
    origin: str | None = None  # the push service's label ("fcm", "apple", a configured host)


Done = Callable[["Result"], None]


class Sender(Protocol):
    """The seam between jobs and the network."""

    def submit(
        self, subscription: Subscription, plaintext: bytes, headers: PushHeaders, done: Done, owner: object = None
    ) -> None:
        """Send one push; `done(result)` is called once, from the event loop, when it is
        settled. `owner` (the batch) may `withdraw` the pushes it submitted."""
        ...

    def withdraw(self, owner: object) -> None:
        """`owner`'s pushes still waiting for a slot are done at once as RETRY "withdrawn"
        (nothing was sent); requests already on the wire complete."""
        ...

    def wants_work(self) -> bool: ...


def about_one_subscription(wns_status: str | None, error_body: bytes) -> bool:
    """Does a throttle answer say it is about this one subscription, not about us?

    WNS marks a throttled channel with `X-WNS-Status: channelthrottled`; Apple's web push
    answers 429 with the JSON reason "TooManyRequests" for "too many requests for the same
    device token" (APNs' documented meaning). Pausing the whole origin for those would let
    one device's quota hold back every subscriber of that push service."""
    if wns_status is not None and wns_status.strip().lower() == "channelthrottled":
        return True
    if b"TooManyRequests" not in error_body:  # the cheap test first: most bodies are not Apple's
        return False
    try:
        answer = json.loads(error_body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("reason") == "TooManyRequests"


def classify(
    status: int,
    retry_after: str | None,
    now: float,
    elapsed: float | None = None,
    origin: str | None = None,
    *,
    one_subscription: bool = False,
) -> tuple[Result, Signal]:
    """Map a push service's answer to what we do next (RFC 8030 and the services' habits),
    and to what it tells the origin's lane. (`elapsed` and `origin` are carried into the
    result: it is built once per push.) `one_subscription`: the answer names one device or
    channel (`about_one_subscription`), or repeats this push's throttle while its lane is
    not being throttled. Without a usable Retry-After that is "not yet" for this push
    alone and nothing for its lane; with one, the push service is pacing us, the sender
    (FCM's quota, autopush's "back off", WNS's service-wide 406), whatever else it says."""
    if 200 <= status < 300:
        return Result(Outcome.SENT, "sent", status, None, elapsed, origin=origin), Signal.FAST
    if status in (404, 410):
        return Result(Outcome.EXPIRED, f"http_{status}", status, None, elapsed, origin=origin), Signal.ANSWERED
    delay = parse_retry_after(retry_after, now)
    reason = f"http_{status}"
    if one_subscription and status in (429, 406) and delay is None:
        result = Result(
            Outcome.RETRY, "device_throttled", status, DEVICE_THROTTLE_DELAY, elapsed, attempted=False, origin=origin
        )
        return result, Signal.DEVICE_THROTTLED
    # 429; WNS's 406; Mozilla autopush's "back off" 503 + Retry-After: throttling, not failure.
    if status in (429, 406) or (status == 503 and delay is not None):
        return Result(Outcome.RETRY, reason, status, delay, elapsed, attempted=False, origin=origin), Signal.THROTTLED
    if status >= 500:
        signal = Signal.OVERLOADED if status == 503 else Signal.ANSWERED
        return Result(Outcome.RETRY, reason, status, delay, elapsed, origin=origin), signal
    # 413 is our bug (payload too big), never the subscription's.
    return Result(Outcome.FAILED, reason, status, None, elapsed, refusal=status != 413, origin=origin), Signal.ANSWERED


class _Push:
    """One push on its way: a `Waiter` in its lane until a slot is free, then a request on
    a connection until it is answered."""

    __slots__ = (
        "admitted_at",
        "callback",
        "done",
        "endpoint",
        "finished",
        "headers",
        "holding",
        "lane",
        "owner",
        "plaintext",
        "pool",
        "request",
        "resent",
        "sender",
        "sent_at",
        "subscription",
        "throttled",
    )

    def __init__(
        self,
        sender: HttpSender,
        subscription: Subscription,
        plaintext: bytes,
        headers: PushHeaders,
        callback: Done,
        owner: object,
        endpoint: PushEndpoint,
        lane: Lane,
        pool: Pool,
    ):
        self.sender, self.subscription, self.plaintext, self.headers = sender, subscription, plaintext, headers
        self.callback, self.owner, self.endpoint, self.lane, self.pool = callback, owner, endpoint, lane, pool
        self.request: bytes | None = None
        self.resent = False  # sent again after a kept-alive connection turned out closed
        self.throttled = False  # throttled once already, then sent again after its lane's pause
        self.sent_at = self.admitted_at = 0.0
        self.done = False  # granted or deferred by its lane (the `Waiter` protocol)
        self.holding = False  # holds a slot of its lane, to give back once
        self.finished = False  # its callback has had its result

    # Waiter: called by the lanes, which must not be re-entered, so the sending is scheduled.
    def granted(self) -> None:
        self.done = self.holding = True
        self.sender.loop.call_soon(self.sender._start, self)

    def deferred(self, deferral: Deferral) -> None:
        self.done = True
        result = Result(
            Outcome.RETRY, deferral.reason, None, deferral.retry_after, attempted=False, origin=self.lane.label
        )
        HttpSender._done(self, result)


class HttpSender:
    """Encrypts, signs and POSTs pushes through per-origin lanes; shared by every job a
    worker process runs, so connections, lane limits and open circuits outlive a batch.

    Args:
        vapid: signs the `Authorization` header, once per origin until near expiry.
        policy: the lanes' limits (`policy.ceiling` is STORYPUSH_MAX_IN_FLIGHT).
        push_hosts: the configured extra push-service hosts (STORYPUSH_PUSH_HOSTS).
    """

    def __init__(
        self,
        vapid: VapidHeaders,
        policy: LanePolicy | None = None,
        push_hosts: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        read_timeout: float = READ_TIMEOUT,
    ):
        self.vapid = vapid
        self.lanes = Lanes(policy or LanePolicy())
        self.push_hosts = push_hosts
        self.ssl_context = ssl_context or default_ssl_context()
        self.clock = clock
        self.read_timeout = read_timeout
        self._pools: dict[str, Pool] = {}
        self.addresses = AddressCache()
        self._connected_at = -RESOLVER_TRUSTED_FOR  # last successful connect, any origin
        self._connecting: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop sending (one per worker)

    def wants_work(self) -> bool:
        return self.lanes.wants_work()

    def withdraw(self, owner: object) -> None:
        self.lanes.withdraw(owner)

    def _pool(self, lane: Lane, endpoint: PushEndpoint) -> Pool:
        pool = self._pools.get(lane.origin)
        if pool is None:
            pool = self._pools[lane.origin] = Pool(endpoint, self.ssl_context)

            def forget(origin: str = lane.origin) -> None:
                self._pools.pop(origin).close()

            lane.on_evict = forget
        return pool

    def route(self, endpoint: str) -> PushEndpoint:
        """Where a push to `endpoint` goes (host and port connected to, path requested), by
        the same parser and host rules the API validated it with.

        Raises:
            InvalidEndpoint: the endpoint is not (or no longer) an allowed push service.
        """
        return parse_endpoint(endpoint, self.push_hosts)

    def submit(
        self, subscription: Subscription, plaintext: bytes, headers: PushHeaders, done: Done, owner: object = None
    ) -> None:
        try:
            endpoint = self.route(subscription.endpoint)
        except InvalidEndpoint as exc:  # stored before the host rules tightened: nothing is sent
            done(Result(Outcome.FAILED, f"endpoint_{exc.reason}", refusal=True))
            return
        if self.loop is None or not self.loop.is_running():
            # Once per loop, not per push: asyncio.get_running_loop() makes a getpid() syscall
            # each call on Python 3.11 (3 % of a worker's CPU).
            self.loop = asyncio.get_running_loop()
        lane = self.lanes.lane(endpoint.origin, endpoint.label)
        push = _Push(self, subscription, plaintext, headers, done, owner, endpoint, lane, self._pool(lane, endpoint))
        self.lanes.enqueue(lane, push)

    async def send(
        self, subscription: Subscription, plaintext: bytes, headers: PushHeaders, owner: object = None
    ) -> Result:
        """`submit`, awaited: the push's result. (Cancelling the awaiting task does not stop
        the push; `withdraw` does.)"""
        settled: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.submit(subscription, plaintext, headers, settled.set_result, owner)
        return await settled

    def _start(self, push: _Push) -> None:
        """A slot is held for `push`: encrypt it (once: a throttled push is sent again as
        it was) and write it on an idle connection, or on a new one."""
        try:
            self._start_sending(push)
        except Exception:
            self._rescue(push, "starting it", sent=False)

    def _start_sending(self, push: _Push) -> None:
        lane = push.lane
        if push.finished:  # settled by `_rescue` while it waited in its lane again
            self._release(push)
            return
        if push.request is None:
            # Encrypt only once a slot is free: encrypting a whole batch up front would
            # stall the event loop (and every answer waiting in it).
            try:
                body = encrypt(push.plaintext, push.subscription.p256dh, push.subscription.auth)
            except ValueError:  # a stored key that no longer makes a point
                self._release(push)
                self._done(push, Result(Outcome.FAILED, "bad_subscription_key", refusal=True, origin=lane.label))
                return
            endpoint, headers = push.endpoint, push.headers
            push.request = (
                f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.authority}\r\nTTL: {headers.ttl}\r\n"
                f"Urgency: {headers.urgency}\r\nTopic: {headers.topic}\r\nContent-Encoding: aes128gcm\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
                f"Authorization: {self.vapid.authorization(endpoint.origin)}\r\n\r\n"
            ).encode("latin-1") + body
        push.sent_at = push.admitted_at = self.lanes.clock()  # (a failed connect is timed from here)
        connection = push.pool.take_idle(self.loop.time())  # type: ignore[union-attr]
        if connection is None:
            self._open(push)
        else:
            self._write(push, connection)

    def _open(self, push: _Push) -> None:
        """Send `push` on a new connection."""
        task = asyncio.ensure_future(self._connect(push))  # the one task: only for a new connection
        self._connecting.add(task)  # (a task nobody refers to may be collected mid-connect)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, push: _Push) -> None:
        try:
            connection = await push.pool.connect(self.loop, self.addresses)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            self._release(push)  # nothing was sent
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._settle(push, Signal.UNREACHABLE, rtt=self.lanes.clock() - push.sent_at)
            self._done(push, self._unreachable(exc, push.lane, connecting=True))
            return
        except Exception:
            self._rescue(push, "connecting", sent=False)
            return
        self._connected_at = self.lanes.clock()
        try:
            self._write(push, connection)
        except Exception:
            connection.close()
            self._rescue(push, "writing it", sent=False)

    def _write(self, push: _Push, connection: Connection) -> None:
        began = time.perf_counter()
        push.sent_at = self.lanes.sent(push.lane)

        def answered(status: int, retry_after: str | None, keep_alive: bool, error: BaseException | None) -> None:
            try:
                self._answered(push, connection, began, status, retry_after, keep_alive, error)
            except Exception:  # never let a bug here break the connection's parser
                self._rescue(push, "settling its answer", sent=200 <= status < 300)

        connection.request(push.request, self.read_timeout, answered)  # type: ignore[arg-type]

    def _answered(
        self,
        push: _Push,
        connection: Connection,
        began: float,
        status: int,
        retry_after: str | None,
        keep_alive: bool,
        error: BaseException | None,
    ) -> None:
        lane = push.lane
        elapsed = time.perf_counter() - began
        if push.finished:  # settled by `_rescue` after a bug: its slot is back, its result given
            connection.close()
            return
        if error is not None:
            connection.close()
            if connection.went_stale and not isinstance(error, TimeoutError) and not push.resent:
                # The keep-alive race: the push service had closed this idle connection. Not
                # a sign it is down (nor an attempt): once more, on a new connection, same slot.
                push.resent = True
                self._open(push)
                return
            self._settle(push, Signal.UNREACHABLE, rtt=elapsed)
            self._done(push, self._unreachable(error, lane, connecting=False))
            return
        push.pool.release(connection, keep_alive, int(lane.limit))
        # A throttle that names one device or channel (`about_one_subscription`), or a push
        # throttled again after its lane waited out (or let pass) its first throttle,
        # while throttles are rare on that lane, is taken to be throttled for its
        # subscription's sake (a device over its quota), so that one device cannot keep
        # pausing the lane of everyone on its push service (measured before: one
        # subscription answered 429 every time, among 6,000 on one origin, left 200 of the
        # others undelivered after 90 s). While the push service throttles most requests,
        # a repeated throttle is its, and the push keeps its place at the head of the lane.
        # (Only without a usable Retry-After: see `classify`.)
        one_subscription = status in (429, 406) and (
            about_one_subscription(connection.wns_status, connection.error_body)
            or (push.throttled and not self.lanes.throttling(lane))
        )
        result, signal = classify(
            status, retry_after, self.clock(), elapsed, lane.label, one_subscription=one_subscription
        )
        self._settle(push, signal, rtt=elapsed, retry_after=result.retry_after)
        if signal is Signal.THROTTLED:
            push.done, push.throttled = False, True  # wait at the head of the lane (or be deferred, or withdrawn)
            self.lanes.enqueue(lane, push, front=True)
            return
        self._done(push, result)

    def _settle(self, push: _Push, signal: Signal, rtt: float, retry_after: float | None = None) -> None:
        """Give `push`'s slot back with what its request told about the origin."""
        if push.holding:
            push.holding = False
            self.lanes.settle(
                push.lane, signal, rtt=rtt, sent_at=push.sent_at, retry_after=retry_after, admitted_at=push.admitted_at
            )

    def _release(self, push: _Push) -> None:
        """Give `push`'s slot back unused: nothing was sent."""
        if push.holding:
            push.holding = False
            self.lanes.release(push.lane)

    def _rescue(self, push: _Push, step: str, sent: bool) -> None:
        """A bug of ours in one push's `step`: log it, give its slot back and settle it (as
        sent if its push service said 2xx, else as a retry), so neither its lane nor its
        batch waits for it until the job's deadline. A retry may repeat a push the service
        took; losing it silently would be worse."""
        logger.exception("push to %s: %s failed", push.lane.label, step)
        try:
            self._release(push)
        except Exception:
            logger.exception("push to %s: giving its slot back failed", push.lane.label)
        outcome, reason = (Outcome.SENT, "sent") if sent else (Outcome.RETRY, "internal_error")
        self._done(push, Result(outcome, reason, origin=push.lane.label))

    @staticmethod
    def _done(push: _Push, result: Result) -> None:
        if push.finished:
            return
        push.finished = True
        try:
            push.callback(result)
        except Exception:  # the caller's bug must not stop the pushes behind it
            logger.exception("push to %s: its caller failed on the result", push.lane.label)

    def _unreachable(self, exc: BaseException, lane: Lane, connecting: bool) -> Result:
        """A network failure: retried (an attempt), except a host that does not exist or
        presents another name's certificate while the rest of the network works."""
        reason = _network_reason(exc)
        trusted = self.lanes.clock() - self._connected_at < RESOLVER_TRUSTED_FOR
        if connecting and reason in ("dns_no_such_host", "tls_wrong_host") and not lane.reached and trusted:
            return Result(Outcome.FAILED, reason, refusal=True, origin=lane.label)
        return Result(Outcome.RETRY, reason, origin=lane.label)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_wrong_host" if "hostname" in str(exc).lower() else "tls_error"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, socket.gaierror):
        return (
            "dns_no_such_host" if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)) else "dns_error"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionError):
        return "connection_reset"
    return "network_error"
