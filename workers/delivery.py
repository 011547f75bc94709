"""Push delivery: the one module that speaks HTTP to push services.

Callers see `Sender.send(subscription, plaintext, headers) -> Result` and count
outcomes; encryption, VAPID, connections and status codes stay in here.

Why a small HTTP/1.1 client on asyncio + httptools instead of aiohttp: a push
is one tiny POST whose answer is a status line and maybe `Retry-After`, and the
benchmark showed a general-purpose client spending more CPU per request than
the RFC 8291 encryption itself. What is hand-written here is only a keep-alive
connection pool per push-service origin and a timeout per request; parsing is
`httptools` (llhttp), TLS is the stdlib's. Redirects are never followed (a 3xx
is a failure) and proxy variables are never read: a push endpoint is a
capability URL for exactly that host.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from service.endpoints import parse_endpoint
from service.subscriptions import Subscription

from .message import PushHeaders
from .webpush import VapidHeaders, encrypt

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# A throttled origin holds back its requests this long at most before the
# remaining pushes are handed to a delayed retry job instead.
MAX_THROTTLE_WAIT = 5.0
DEFAULT_THROTTLE = 10.0


class Outcome(StrEnum):
    SENT = "sent"
    EXPIRED = "expired"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"  # never sent: the subscriber's quiet hours or daily cap (service.targeting)


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from the push service's Retry-After
    elapsed: float | None = None  # seconds from request written to answer parsed, for metrics


class Sender(Protocol):
    async def send(self, subscription: Subscription, plaintext: bytes, headers: PushHeaders) -> Result: ...


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def classify(status: int, retry_after: str | None, now: float) -> Result:
    """Map a push service's answer to what we do next (RFC 8030 and the services' habits)."""
    if 200 <= status < 300:
        return Result(Outcome.SENT, "sent", status)
    if status in (404, 410):
        return Result(Outcome.EXPIRED, f"http_{status}", status)
    if status in (429, 503, 406):  # 406: WNS's way of saying "throttled"
        return Result(Outcome.RETRY, f"http_{status}", status, parse_retry_after(retry_after, now))
    if status >= 500:
        return Result(Outcome.RETRY, f"http_{status}", status)
    return Result(Outcome.FAILED, f"http_{status}", status)


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """(authority, path?query) to send `endpoint` to, from `service.endpoints.parse_endpoint`:
    the parser the API validated it with, against this worker's STORYPUSH_PUSH_HOSTS, so the
    sender connects to exactly the host the validator approved and to nothing it refuses now.

    Raises:
        InvalidEndpoint: a ValueError, so the batch counts the push failed: an endpoint stored
            before a rule tightened, or on an extra host the operator has since removed.
    """
    from .runtime import runtime  # the worker's settings; runtime.py imports this module

    parsed = parse_endpoint(endpoint, runtime().settings.push_hosts)
    return parsed.authority, parsed.path


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.retry_after: str | None = None
        self.lost = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionResetError("connection lost"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self._cancel_timer()
            self.waiter.set_result((self.parser.get_status_code(), self.retry_after, self.parser.should_keep_alive()))

    # ours
    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def request(self, data: bytes, timeout: float) -> asyncio.Future:
        self.retry_after = None
        self.waiter = self.loop.create_future()
        # A timer instead of asyncio.wait_for: no extra task per request.
        self._timer = self.loop.call_later(timeout, self._fail, TimeoutError("push service did not answer"))
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Origin:
    """Idle connections to one push-service origin, and its throttle."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None):
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self.idle: list[_Connection] = []
        self.paused_until = 0.0

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if connection.usable:
                return connection
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Connection(loop),
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
            ),
            CONNECT_TIMEOUT,
        )
        return connection

    def release(self, connection: _Connection, keep_alive: bool) -> None:
        if keep_alive and connection.usable:
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


class HttpSender:
    """Encrypts, signs and POSTs pushes; shared by every job a worker process runs,
    so connections stay alive from one batch to the next.

    `max_in_flight` bounds concurrent requests (and so open connections); it is
    the one concurrency limit, set from STORYPUSH_MAX_IN_FLIGHT.
    """

    def __init__(
        self,
        vapid: VapidHeaders,
        max_in_flight: int = 200,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        read_timeout: float = READ_TIMEOUT,
    ):
        self.vapid = vapid
        self.max_in_flight = max_in_flight
        self.ssl_context = ssl_context or default_ssl_context()
        self.clock = clock
        self.read_timeout = read_timeout
        self._origins: dict[str, _Origin] = {}
        self._slots: asyncio.Semaphore | None = None

    def _origin(self, netloc: str) -> _Origin:
        origin = self._origins.get(netloc)
        if origin is None:
            parts = urlsplit(f"https://{netloc}")
            origin = self._origins[netloc] = _Origin(parts.hostname or "", parts.port or 443, self.ssl_context)
        return origin

    async def send(self, subscription: Subscription, plaintext: bytes, headers: PushHeaders) -> Result:
        netloc, path = split_endpoint(subscription.endpoint)
        origin = self._origin(netloc)
        wait = origin.paused_until - self.clock()
        if wait > MAX_THROTTLE_WAIT:
            return Result(Outcome.RETRY, "throttled", None, wait)
        if wait > 0:
            await asyncio.sleep(wait)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        async with self._slots:
            # Encrypt only once a slot is free: encrypting a whole batch up front
            # would stall the event loop (and every answer waiting in it) for
            # ~100 ms each time a batch starts.
            body = encrypt(plaintext, subscription.p256dh, subscription.auth)
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nTTL: {headers.ttl}\r\nUrgency: {headers.urgency}\r\n"
                f"Topic: {headers.topic}\r\nContent-Encoding: aes128gcm\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
                f"Authorization: {self.vapid.authorization(f'https://{netloc}')}\r\n\r\n"
            ).encode("latin-1") + body
            loop = asyncio.get_running_loop()
            try:
                connection = await origin.acquire(loop)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                return Result(Outcome.RETRY, _network_reason(exc))
            began = time.perf_counter()
            try:
                status, retry_after, keep_alive = await connection.request(request, self.read_timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                connection.close()
                return Result(Outcome.RETRY, _network_reason(exc))
            origin.release(connection, keep_alive)
            elapsed = time.perf_counter() - began
        now = self.clock()
        result = replace(classify(status, retry_after, now), elapsed=elapsed)
        if status == 429 or (status in (503, 406) and result.retry_after):
            # Slow down this origin only; other push services keep full speed.
            origin.paused_until = max(origin.paused_until, now + (result.retry_after or DEFAULT_THROTTLE))
        return result

    def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, ConnectionError):
        return "connection_reset"
    return "network_error"
