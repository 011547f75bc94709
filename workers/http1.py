"""HTTP/1.1 to one push service: kept-alive connections and the pool of idle ones.

Why hand-written on asyncio + httptools instead of aiohttp: a push is one tiny POST whose
answer is a status line and maybe `Retry-After`, and the benchmark showed a
general-purpose client spending more CPU per request than the RFC 8291 encryption
itself. Parsing is `httptools` (llhttp) and TLS the stdlib's; what is written here is a
connection that carries one request at a time with a timer, and a pool of idle ones per
origin. The answer is a push service's, so hostile input: interim 1xx answers are read
past, a status stands once its headers are in whatever the body then does, and an answer
past `MAX_ANSWER_BYTES` is cut off. What the status *means* is `workers.delivery`'s.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Callable

import httptools

from service.endpoints import PushEndpoint

from .addresses import AddressCache

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# A push service's answer is a status line, a few headers and maybe a short JSON error;
# past this many bytes it is junk, and httptools would keep a header without end in memory.
MAX_ANSWER_BYTES = 64 * 1024
# Of an error answer's body, this much is kept for `workers.delivery` to read its JSON
# "reason" (Apple's 429 says whether it is about one device); the rest is read past.
ERROR_BODY_KEPT = 512
# An idle connection older than this is closed rather than used (aiohttp's keep-alive
# default). A worker's event loop only runs while it has a job, so a connection the push
# service closed between two campaigns still looks open when the next one starts; and a
# server that closes idle connections at, say, 60 s races our next request on them.
KEEPALIVE_IDLE = 15.0
# A host's TLS session ticket is renewed from a new connection's at most this often (see
# `ResumingContext.remember`): well within the lifetime servers give tickets (hours).
SESSION_REFRESH = 60.0


# Called once per request: (status, Retry-After, keep-alive, None) or (0, None, False, error).
Answered = Callable[[int, str | None, bool, BaseException | None], None]


class Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection; one request at a time, its answer handed to a
    callback from inside `data_received`: no task or future per push (they cost more CPU
    than anything here but the encryption)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answered: Answered | None = None
        self.retry_after: str | None = None
        self.wns_status: str | None = None  # WNS's X-WNS-Status (e.g. "channelthrottled")
        self.error_body = b""  # the first ERROR_BODY_KEPT bytes of a 4xx/5xx answer's body
        self.status = 0  # the final answer's status once its headers are in, else 0
        self.received = 0  # bytes of the current answer so far
        self.served = 0  # requests written on it, the current one included
        self.idle_since = 0.0  # loop time it went back to its pool
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
        name = name.lower()
        if name == b"retry-after":
            self.retry_after = value.decode("latin-1")
        elif name == b"x-wns-status":
            self.wns_status = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.status = status
        else:
            # An interim answer (103 Early Hints, an unasked 100): RFC 9110 §15.2 says read
            # past it to the final one, forgetting its headers. (A 101 we never asked for
            # is followed by httptools' HttpParserUpgrade: a bad response.)
            self.retry_after = self.wns_status = None

    def on_body(self, body: bytes) -> None:
        if self.status >= 400 and len(self.error_body) < ERROR_BODY_KEPT:
            self.error_body = (self.error_body + body)[:ERROR_BODY_KEPT]

    def on_message_complete(self) -> None:
        if self.status:
            self._settle(self.parser.should_keep_alive())

    # ours
    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    @property
    def went_stale(self) -> bool:
        """Did the current request fail the way a kept-alive connection the server had
        already closed fails: a connection used before, closed or reset with not one byte of
        an answer? (Not a timeout: that request may be in the works.)"""
        return self.served > 1 and not self.received

    def request(self, data: bytes, timeout: float, answered: Answered) -> None:
        self.retry_after = self.wns_status = None
        self.error_body = b""
        self.status = 0
        self.received = 0
        self.served += 1
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


class Pool:
    """Idle kept-alive connections to one origin (never more than its lane's limit)."""

    def __init__(self, endpoint: PushEndpoint, ssl_context: ssl.SSLContext | None):
        self.host, self.port, self.ssl_context = endpoint.host, endpoint.port, ssl_context
        self.idle: list[Connection] = []

    def take_idle(self, now: float) -> Connection | None:
        """The most recently used idle connection (`now` is the loop's time), if one is still
        open and was idle no longer than KEEPALIVE_IDLE; older ones are closed."""
        while self.idle:
            connection = self.idle.pop()
            if connection.usable and now - connection.idle_since <= KEEPALIVE_IDLE:
                return connection
            connection.close()
        return None

    async def connect(self, loop: asyncio.AbstractEventLoop, addresses: AddressCache) -> Connection:
        return await asyncio.wait_for(self._connect(loop, addresses), CONNECT_TIMEOUT)

    async def _connect(self, loop: asyncio.AbstractEventLoop, addresses: AddressCache) -> Connection:
        """Connect to the host's first address that takes it (TLS names the host, not the
        address); an address that fails goes to the back of the list."""
        error: OSError | None = None
        for address in list(await addresses.lookup(self.host, self.port)):
            family, sockaddr = address
            try:
                _, connection = await loop.create_connection(
                    lambda: Connection(loop),
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

    def release(self, connection: Connection, keep_alive: bool, keep: int) -> None:
        """`connection` has been answered: back to the idle ones (at most `keep` of them)."""
        if connection.served == 1 and isinstance(self.ssl_context, ResumingContext) and connection.transport:
            self.ssl_context.remember(self.host, connection.transport, connection.loop.time())
        if keep_alive and connection.usable and len(self.idle) < keep:
            connection.idle_since = connection.loop.time()
            self.idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


class ResumingContext(ssl.SSLContext):
    """A client context that resumes TLS sessions: each new connection to a host offers
    the session ticket an earlier connection there was given (RFC 8446 §2.2).

    Why: a worker opens a connection per request in flight, about a thousand to one push
    service in its first second, and handshakes were a tenth of a new worker's CPU. A new
    connection through `Pool` cost 717 µs of CPU, 566 µs resumed (medians of four rounds
    of 1,000 at once, `python -m benchmarks.connections`); the handshake alone 554 against
    204 µs (no certificate chain and signature to check). The push service decides whether
    to resume (else it is a full handshake, nothing lost); a session is only offered to the
    host name whose certificate it was made with. (One ticket offered by many connections
    lets the server link them: all of them are ours, signed with our VAPID key anyway.)
    `max_hosts` bounds the tickets kept, as push endpoints name their own hosts.
    """

    def __new__(cls, max_hosts: int = 1024) -> ResumingContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)  # checks certificates and host names

    def __init__(self, max_hosts: int = 1024):
        self.sessions: OrderedDict[str, tuple[ssl.SSLSession, float]] = OrderedDict()  # host: (session, kept at)
        self.max_hosts = max_hosts

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """(asyncio's and uvloop's TLS transports call this for each new connection.)"""
        if session is None and server_hostname is not None and not server_side:
            kept = self.sessions.get(server_hostname)
            session = kept[0] if kept is not None else None
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def remember(self, host: str, transport: asyncio.BaseTransport, now: float) -> None:
        """Keep the session of `transport`'s connection to `host` (`now` is the loop's time)
        for the next ones. Called once an answer came in on it: a TLS 1.3 ticket arrives
        after the handshake. Only once every SESSION_REFRESH per host: reading a session
        copies it, peer certificate and all, which cost as much CPU as the rest of a push's
        HTTP when done for every connection."""
        kept = self.sessions.get(host)
        if kept is not None and now - kept[1] < SESSION_REFRESH:
            return
        ssl_object = transport.get_extra_info("ssl_object")
        session = ssl_object.session if ssl_object is not None else None
        if session is None or not session.has_ticket:
            return
        self.sessions[host] = (session, now)
        self.sessions.move_to_end(host)
        if len(self.sessions) > self.max_hosts:
            self.sessions.popitem(last=False)


def default_ssl_context() -> ResumingContext:
    """The system store, or the bundle named by SSL_CERT_FILE (OpenSSL reads it), checked
    as `ssl.create_default_context` checks (certificate, host name, this Python's flags)."""
    context = ResumingContext()
    context.verify_flags = ssl.create_default_context().verify_flags
    context.load_default_certs()
    context.set_alpn_protocols(["http/1.1"])
    return context
