"""Push delivery: the one module that speaks HTTP to push services.

Callers see `Sender.send(subscription, plaintext, headers) -> Result` and count
outcomes; encryption, VAPID, connections, status codes and the per-origin lanes
(`workers.lanes`: queue, adaptive limit, Retry-After pause, circuit breaker) stay in
here. A push the lane holds back for a moment (a short Retry-After) waits in its lane
and is sent again; one it holds back for longer comes back as a RETRY that is "not yet"
(`attempted=False`), not a failed attempt.

Why a small HTTP/1.1 client on asyncio + httptools instead of aiohttp: a push
is one tiny POST whose answer is a status line and maybe `Retry-After`, and the
benchmark showed a general-purpose client spending more CPU per request than
the RFC 8291 encryption itself. What is hand-written here is only a keep-alive
connection pool per push-service origin, a timeout per request and (in
`workers.addresses`) a short-lived cache of each origin's addresses; parsing is
`httptools` (llhttp), TLS is the stdlib's. Redirects are never followed (a 3xx
is a failure) and proxy variables are never read: a push endpoint is a
capability URL for exactly that host.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import httptools

from service.endpoints import InvalidEndpoint, PushEndpoint, parse_endpoint
from service.retry_after import parse_retry_after
from service.subscriptions import Subscription

from .addresses import AddressCache
from .lanes import Deferral, Lane, LanePolicy, Lanes, Signal
from .message import PushHeaders
from .webpush import VapidHeaders, encrypt

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# A push service's answer is a status line, a few headers and maybe a short JSON error;
# past this many bytes it is junk, and httptools would keep a header without end in memory.
MAX_ANSWER_BYTES = 64 * 1024
# A host whose name does not exist counts against its subscriptions only while other
# origins connect fine (then it is the endpoint that is junk, not our resolver).
RESOLVER_TRUSTED_FOR = 600.0


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


def classify(
    status: int, retry_after: str | None, now: float, elapsed: float | None = None, origin: str | None = None
) -> tuple[Result, Signal]:
    """Map a push service's answer to what we do next (RFC 8030 and the services' habits),
    and to what it tells the origin's lane. (`elapsed` and `origin` are carried into the
    result: it is built once per push.)"""
    if 200 <= status < 300:
        return Result(Outcome.SENT, "sent", status, None, elapsed, origin=origin), Signal.FAST
    if status in (404, 410):
        return Result(Outcome.EXPIRED, f"http_{status}", status, None, elapsed, origin=origin), Signal.ANSWERED
    delay = parse_retry_after(retry_after, now)
    reason = f"http_{status}"
    # 429; WNS's 406; Mozilla autopush's "back off" 503 + Retry-After: throttling, not failure.
    if status in (429, 406) or (status == 503 and delay is not None):
        return Result(Outcome.RETRY, reason, status, delay, elapsed, attempted=False, origin=origin), Signal.THROTTLED
    if status >= 500:
        signal = Signal.OVERLOADED if status == 503 else Signal.ANSWERED
        return Result(Outcome.RETRY, reason, status, delay, elapsed, origin=origin), signal
    # 413 is our bug (payload too big), never the subscription's.
    return Result(Outcome.FAILED, reason, status, None, elapsed, refusal=status != 413, origin=origin), Signal.ANSWERED


# Called once per request: (status, Retry-After, keep-alive, None) or (0, None, False, error).
Answered = Callable[[int, str | None, bool, BaseException | None], None]


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection; one request at a time, its answer handed to a
    callback from inside `data_received`: no task or future per push (they cost more CPU
    than anything here but the encryption)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answered: Answered | None = None
        self.retry_after: str | None = None
        self.status = 0  # the final answer's status once its headers are in, else 0
        self.received = 0  # bytes of the current answer so far
        self.lost = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionResetError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > MAX_ANSWER_BYTES:
            self._fail(ConnectionError(f"bad response: more than {MAX_ANSWER_BYTES} bytes"))
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.status = status
        else:
            # An interim answer (103 Early Hints, an unasked 100): RFC 9110 §15.2 says read
            # past it to the final one, forgetting its headers. (A 101 we never asked for
            # is followed by httptools' HttpParserUpgrade: a bad response.)
            self.retry_after = None

    def on_message_complete(self) -> None:
        if self.status:
            self._settle(self.parser.should_keep_alive())

    # ours
    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def request(self, data: bytes, timeout: float, answered: Answered) -> None:
        self.retry_after = None
        self.status = 0
        self.received = 0
        self.answered = answered
        # A timer instead of asyncio.wait_for: no extra task per request.
        self._timer = self.loop.call_later(timeout, self._fail, TimeoutError("push service did not answer"))
        assert self.transport is not None
        self.transport.write(data)

    def _settle(self, keep_alive: bool) -> None:
        answered, self.answered = self.answered, None
        if answered is not None:
            self._cancel_timer()
            answered(self.status, self.retry_after, keep_alive, None)

    def _fail(self, exc: Exception) -> None:
        """The connection broke, timed out or spoke nonsense before the answer was complete.

        If the final answer's headers were in, the push service has decided: its status
        stands (the connection is not reused). A body delimited by the connection closing
        (RFC 9112 §6.3: no Content-Length) ends so, and one that stalls or breaks off must
        not turn a delivered push into a retried, duplicated one.
        """
        if self.status:
            self._settle(keep_alive=False)
            return
        self._cancel_timer()
        answered, self.answered = self.answered, None
        if answered is not None:
            answered(0, None, False, exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Idle kept-alive connections to one origin (never more than its lane's limit)."""

    def __init__(self, endpoint: PushEndpoint, ssl_context: ssl.SSLContext | None):
        self.host, self.port, self.ssl_context = endpoint.host, endpoint.port, ssl_context
        self.idle: list[_Connection] = []

    def take_idle(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if connection.usable:
                return connection
        return None

    async def connect(self, loop: asyncio.AbstractEventLoop, addresses: AddressCache) -> _Connection:
        return await asyncio.wait_for(self._connect(loop, addresses), CONNECT_TIMEOUT)

    async def _connect(self, loop: asyncio.AbstractEventLoop, addresses: AddressCache) -> _Connection:
        """Connect to the host's first address that takes it (TLS names the host, not the
        address); an address that fails goes to the back of the list."""
        error: OSError | None = None
        for address in list(await addresses.lookup(self.host, self.port)):
            family, sockaddr = address
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    sockaddr[0],
                    sockaddr[1],
                    family=family,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                )
            except ssl.SSLError:
                raise  # the host answered: its other addresses would say the same
            except OSError as exc:
                error = exc
                addresses.demote(self.host, self.port, address)
                continue
            except asyncio.CancelledError:  # out of time on this address
                addresses.demote(self.host, self.port, address)
                raise
            return connection
        assert error is not None
        raise error

    def release(self, connection: _Connection, keep_alive: bool, keep: int) -> None:
        if keep_alive and connection.usable and len(self.idle) < keep:
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def default_ssl_context() -> ssl.SSLContext:
    """The system store, or the bundle named by SSL_CERT_FILE (OpenSSL reads it)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Push:
    """One push on its way: a `Waiter` in its lane until a slot is free, then a request on
    a connection until it is answered."""

    __slots__ = (
        "callback",
        "done",
        "endpoint",
        "headers",
        "lane",
        "owner",
        "plaintext",
        "pool",
        "request",
        "sender",
        "sent_at",
        "subscription",
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
        pool: _Pool,
    ):
        self.sender, self.subscription, self.plaintext, self.headers = sender, subscription, plaintext, headers
        self.callback, self.owner, self.endpoint, self.lane, self.pool = callback, owner, endpoint, lane, pool
        self.request: bytes | None = None
        self.sent_at = 0.0
        self.done = False

    # Waiter: called by the lanes, which must not be re-entered, so the sending is scheduled.
    def granted(self) -> None:
        self.done = True
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
        self._pools: dict[str, _Pool] = {}
        self.addresses = AddressCache()
        self._connected_at = -RESOLVER_TRUSTED_FOR  # last successful connect, any origin
        self._connecting: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop sending (one per worker)

    def wants_work(self) -> bool:
        return self.lanes.wants_work()

    def withdraw(self, owner: object) -> None:
        self.lanes.withdraw(owner)

    def _pool(self, lane: Lane, endpoint: PushEndpoint) -> _Pool:
        pool = self._pools.get(lane.origin)
        if pool is None:
            pool = self._pools[lane.origin] = _Pool(endpoint, self.ssl_context)

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
        lane = push.lane
        if push.request is None:
            # Encrypt only once a slot is free: encrypting a whole batch up front would
            # stall the event loop (and every answer waiting in it).
            try:
                body = encrypt(push.plaintext, push.subscription.p256dh, push.subscription.auth)
            except ValueError:  # a stored key that no longer makes a point
                self.lanes.release(lane)
                self._done(push, Result(Outcome.FAILED, "bad_subscription_key", refusal=True, origin=lane.label))
                return
            endpoint, headers = push.endpoint, push.headers
            push.request = (
                f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.authority}\r\nTTL: {headers.ttl}\r\n"
                f"Urgency: {headers.urgency}\r\nTopic: {headers.topic}\r\nContent-Encoding: aes128gcm\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
                f"Authorization: {self.vapid.authorization(endpoint.origin)}\r\n\r\n"
            ).encode("latin-1") + body
        push.sent_at = self.lanes.clock()
        connection = push.pool.take_idle()
        if connection is None:
            task = asyncio.ensure_future(self._connect(push))  # the one task: only for a new connection
            self._connecting.add(task)  # (a task nobody refers to may be collected mid-connect)
            task.add_done_callback(self._connecting.discard)
        else:
            self._write(push, connection)

    async def _connect(self, push: _Push) -> None:
        lanes, lane = self.lanes, push.lane
        try:
            connection = await push.pool.connect(self.loop, self.addresses)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            lanes.release(lane)  # nothing was sent
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            lanes.settle(lane, Signal.UNREACHABLE, rtt=lanes.clock() - push.sent_at, sent_at=push.sent_at)
            self._done(push, self._unreachable(exc, lane, connecting=True))
            return
        self._connected_at = lanes.clock()
        self._write(push, connection)

    def _write(self, push: _Push, connection: _Connection) -> None:
        began = time.perf_counter()

        def answered(status: int, retry_after: str | None, keep_alive: bool, error: BaseException | None) -> None:
            try:
                self._answered(push, connection, began, status, retry_after, keep_alive, error)
            except Exception:  # never let a bug here break the connection's parser
                logger.exception("push to %s: settling its answer failed", push.lane.label)

        connection.request(push.request, self.read_timeout, answered)  # type: ignore[arg-type]

    def _answered(
        self,
        push: _Push,
        connection: _Connection,
        began: float,
        status: int,
        retry_after: str | None,
        keep_alive: bool,
        error: BaseException | None,
    ) -> None:
        lanes, lane = self.lanes, push.lane
        elapsed = time.perf_counter() - began
        if error is not None:
            connection.close()
            lanes.settle(lane, Signal.UNREACHABLE, rtt=elapsed, sent_at=push.sent_at)
            self._done(push, self._unreachable(error, lane, connecting=False))
            return
        push.pool.release(connection, keep_alive, int(lane.limit))
        result, signal = classify(status, retry_after, self.clock(), elapsed, lane.label)
        lanes.settle(lane, signal, rtt=elapsed, sent_at=push.sent_at, retry_after=result.retry_after)
        if result.outcome is Outcome.RETRY and not result.attempted:
            push.done = False  # throttled: wait at the head of the lane (or be deferred, or withdrawn)
            lanes.enqueue(lane, push, front=True)
            return
        self._done(push, result)

    @staticmethod
    def _done(push: _Push, result: Result) -> None:
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
