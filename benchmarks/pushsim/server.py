"""The simulator process: HTTPS/1.1 on asyncio + uvloop with an httptools parser.

Run as `python -m benchmarks.pushsim.server --state-dir DIR [--origins 1] [--port 0]
[--latency-ms 0] [--verify all|sample:N|deferred] [--cpu N]`. It writes `DIR/ca.pem` (a
throwaway trustme CA) and then, atomically, `DIR/ready.json` with the bound ports: one
per push-service origin, plus a control port that no origin's misbehaviour ever closes.
It exits on SIGTERM/SIGINT or when its stdin reaches EOF, so a parent that dies leaves no
orphan behind.

A bare `asyncio.Protocol` is used instead of aiohttp.web because the simulator shares a
core with nothing and must stay far ahead of the sender under benchmark (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import ssl
import struct
import sys
from collections import deque
from collections.abc import Coroutine
from pathlib import Path

import httptools
import trustme
import uvloop

from benchmarks.pushsim.handler import DROP, HANG, MAX_ORIGINS, MAX_REQUEST_BODY, PushHandler, Request, Response
from benchmarks.pushsim.origins import Origin

logger = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# An interim answer a client must read past (RFC 9110 §15.2), even one it did not ask for.
_EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </push.css>; rel=preload\r\nRetry-After: 3600\r\n\r\n"
# Connections the kernel holds for us until accepted (capped by net.core.somaxconn): a
# sender ramping up opens hundreds within a round trip while we are busy with handshakes,
# and one beyond the backlog waits for TCP's retransmit, a second later.
_BACKLOG = 4096
_CONTROL = -1  # the control port's key among the origins' indices
_BUG = Response(500, b'{"code": 500, "reason": "simulator bug, see its log"}')


class HttpConnection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests and answers them strictly in order.

    With no latency and nothing queued a push is answered inline (no task per request,
    which is what keeps it fast). Otherwise requests, and every control call, go through
    one worker task per connection, so pipelined requests still get their answers in
    request order. Once a request hangs, nothing after it on the connection is answered
    either, as with a real HTTP/1.1 server stuck on a request.
    """

    def __init__(self, handler: PushHandler, origin: Origin | None, connections: set[HttpConnection]) -> None:
        self._handler = handler
        self._origin = origin  # None on the control port
        self._connections = connections  # this port's open connections, closed on refusal
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._hung = False
        self._flooding: asyncio.Task[None] | None = None  # the "flood" framing's writer
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's SSL transport is not an asyncio.Transport subclass, only duck-typed as one.
        self._transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        if self._worker is not None:
            self._worker.cancel()
        if self._flooding is not None:
            self._flooding.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as exc:
            if self._body_size > MAX_REQUEST_BODY:
                self._fail(413, "request body too large")
            else:
                self._fail(400, f"malformed HTTP request: {exc}")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests too.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_REQUEST_BODY:
            raise httptools.HttpParserError("request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = Request(
            self._parser.get_method().decode("ascii"),
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body),
        )
        keep_alive = self._parser.should_keep_alive()
        origin = self._origin
        if self._hung:
            if origin is not None:
                self._handler.hung(origin, request)
        elif (
            self._worker is None
            and not self._queue
            and origin is not None
            and origin.latency_s == 0
            and not request.target.startswith("/_sim/")
        ):
            self._answer(self._handle(request), keep_alive, self._is_push(request))
        else:
            self._queue.append((request, keep_alive))
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._drain())

    # -- answering -----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Answer queued requests in order, each push after its origin's latency at that moment."""
        origin = self._origin
        try:
            while self._queue and not self._closing and not self._hung:
                request, keep_alive = self._queue.popleft()
                if origin is not None and origin.latency_s > 0 and request.target.startswith("/push/"):
                    await asyncio.sleep(origin.delay())
                response = self._handle(request)
                if asyncio.iscoroutine(response):
                    response = await self._control(response)
                self._answer(response, keep_alive, self._is_push(request))
        finally:
            self._worker = None

    def _is_push(self, request: Request) -> bool:
        """Is this a push to an origin (whose misbehaviour may shape its answer), not a
        control call?"""
        return self._origin is not None and request.target.startswith("/push/")

    def _handle(self, request: Request) -> object:
        # The HTTP edge: a bug in the handler becomes a 500 the test sees, not a hung client.
        try:
            return self._handler.handle(request, self._origin)
        except Exception:
            logger.exception("simulator bug while handling %s %s", request.method, request.target[:40])
            return _BUG

    @staticmethod
    async def _control(call: Coroutine[None, None, Response]) -> Response:
        try:
            return await call
        except Exception:
            logger.exception("simulator bug in a control call")
            return _BUG

    def _answer(self, response: object, keep_alive: bool, push: bool = False) -> None:
        if self._closing or self._transport is None:
            return
        if response is DROP:
            self.reset_connection()
            return
        if response is HANG:
            self._hang()
            return
        assert isinstance(response, Response)
        framing = None
        if push:
            assert self._origin is not None
            framing = self._origin.framing
            if self._origin.early_hints:
                self._transport.write(_EARLY_HINTS)
            if framing == "flood":
                self._hang()
                self._flooding = asyncio.get_running_loop().create_task(self._flood(response))
                return
        self._transport.write(response.encode(keep_alive, framing))
        if framing == "stall":
            self._hang()  # the promised last byte never comes, nor any answer after it
        elif not keep_alive or framing == "close":
            self._close()

    async def _flood(self, response: Response) -> None:
        """A status line, then one header whose value never ends, until the client hangs up
        (a hostile push service's way to fill a client's memory)."""
        assert self._transport is not None
        self._transport.write(f"HTTP/1.1 {response.status} Flood\r\nX-Flood: ".encode())
        chunk = b"a" * 16384
        while not self._closing:
            if self._transport.get_write_buffer_size() < 1 << 20:
                self._transport.write(chunk)
            await asyncio.sleep(0.001)

    def _fail(self, status: int, reason: str) -> None:
        """Answer a request we cannot parse and close: the framing is no longer trustworthy."""
        if self._transport is not None and not self._closing:
            body = json.dumps({"code": status, "reason": reason}).encode()
            self._transport.write(Response(status, body).encode(keep_alive=False))
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()

    def _hang(self) -> None:
        """Never answer again: requests still queued, or still to come, are recorded as hung."""
        self._hung = True
        assert self._origin is not None
        while self._queue:
            self._handler.hung(self._origin, self._queue.popleft()[0])

    def reset_connection(self) -> None:
        """Close with a TCP RST and no TLS close_notify, like a push service that died."""
        if self._closing or self._transport is None:
            return
        self._closing = True
        self._queue.clear()
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()


def make_tls(ca_file: Path) -> ssl.SSLContext:
    """A throwaway CA (written to `ca_file`) and a server context for 127.0.0.1/localhost."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    # HTTP/1.1 only: a real push service would offer h2, but our sender speaks HTTP/1.1.
    context.set_alpn_protocols(["http/1.1"])
    return context


def _bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket that is not listening yet: connects to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Ports:
    """The listening sockets: one per origin plus the control port, one TLS context for all.

    A refused origin's port is closed (with every connection on it), then bound again
    without listening, so connects get ECONNREFUSED yet no other process can take the port
    before the origin listens again.
    """

    def __init__(self, handler: PushHandler, host: str, context: ssl.SSLContext) -> None:
        self._handler = handler
        self._host = host
        self._context = context
        self._servers: dict[int, asyncio.Server] = {}
        self._held: dict[int, socket.socket] = {}  # refused origins' ports, bound, not listening
        self._connections: dict[int, set[HttpConnection]] = {}
        self.ports: dict[int, int] = {}

    async def open(self, first_port: int) -> None:
        """Listen on the control port and every origin's (`first_port` + index, or free ports)."""
        self.control_port = await self._serve(_CONTROL, None, 0)
        for origin in self._handler.origins:
            port = await self._serve(origin.index, origin, first_port + origin.index if first_port else 0)
            origin.bind(f"https://{self._host}:{port}")

    async def _serve(self, key: int, origin: Origin | None, port: int, sock: socket.socket | None = None) -> int:
        sock = sock or _bind(self._host, port)
        try:
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            connections = self._connections.setdefault(key, set())
            self._servers[key] = await asyncio.get_running_loop().create_server(
                lambda: HttpConnection(self._handler, origin, connections),
                sock=sock,
                ssl=self._context,
                backlog=_BACKLOG,  # create_server listens again, with its default of 100 unless told
            )
        except BaseException:
            sock.close()
            raise
        self.ports[key] = sock.getsockname()[1]
        return self.ports[key]

    async def set_listening(self, origin: Origin, on: bool) -> None:
        """Listen again on the origin's own port, or stop listening and close its connections."""
        index = origin.index
        if on:
            await self._serve(index, origin, self.ports[index], self._held.pop(index, None))
            return
        # close() shuts the listening socket at once (not waiting for connections, which
        # are reset here), so the port can be bound again straight away.
        self._servers.pop(index).close()
        for connection in list(self._connections[index]):
            connection.reset_connection()
        try:
            self._held[index] = _bind(self._host, self.ports[index])
        except OSError as exc:  # still refused; listening again binds afresh
            logger.warning("cannot hold port %d while it refuses connections: %s", self.ports[index], exc)

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for sock in self._held.values():
            sock.close()


async def serve(handler: PushHandler, host: str, port: int, state_dir: Path) -> None:
    """Listen, announce readiness, and run until told to stop."""
    loop = asyncio.get_running_loop()
    ports = Ports(handler, host, make_tls(state_dir / "ca.pem"))
    handler.listeners = ports
    try:
        await ports.open(port)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        _watch_stdin(loop, stop)

        origins = [origin.url for origin in handler.origins]
        ready = state_dir / "ready.json"
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "port": ports.ports[0],
                    "origin": origins[0],
                    "ports": [ports.ports[index] for index in range(len(origins))],
                    "origins": origins,
                    "control_port": ports.control_port,
                    "pid": os.getpid(),
                }
            )
        )
        tmp.replace(ready)  # atomic: the parent never reads half a file
        logger.info("push simulator listening on %s (control port %d)", ", ".join(origins), ports.control_port)
        await stop.wait()
    finally:
        ports.close()


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when stdin closes: the parent holds the other end, so this fires if it dies."""
    if sys.stdin is None or sys.stdin.isatty():
        return
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    try:
        loop.add_reader(fd, on_readable)
    except (OSError, ValueError, PermissionError):
        logger.warning("cannot watch stdin; relying on signals to stop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, required=True, help="where ca.pem and ready.json are written")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--origins", type=int, default=1, help=f"push-service origins (ports), 1..{MAX_ORIGINS}")
    parser.add_argument("--port", type=int, default=0, help="first origin's port, the others follow; 0: free ports")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--verify", default="all", help="all | sample:N | deferred")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pushsim %(levelname)s %(message)s")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    # Records pile up by the tens of thousands and are never freed until reset; with the
    # default thresholds the collector rescans them all the time (21% of CPU, measured).
    gc.set_threshold(100_000, 50, 1000)
    handler = PushHandler(verify=args.verify, latency_ms=args.latency_ms, origins=args.origins)
    uvloop.run(serve(handler, args.host, args.port, args.state_dir))


if __name__ == "__main__":
    main()
