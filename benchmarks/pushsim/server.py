"""The simulator process: HTTPS/1.1 on asyncio + uvloop with an httptools parser.

Run as `python -m benchmarks.pushsim.server --state-dir DIR [--port 0] [--latency-ms 0]
[--verify all|sample:N|deferred] [--cpu N]`. It writes `DIR/ca.pem` (a throwaway trustme
CA) and then, atomically, `DIR/ready.json` with the bound port. It exits on SIGTERM/SIGINT
or when its stdin reaches EOF, so a parent that dies leaves no orphan behind.

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
from pathlib import Path

import httptools
import trustme
import uvloop

from benchmarks.pushsim.handler import DROP, MAX_REQUEST_BODY, PushHandler, Request, Response

logger = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpConnection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests and answers them strictly in order.

    With no latency and nothing queued a request is answered inline (no task per request,
    which is what keeps it fast). Otherwise requests go through one worker task per
    connection, so pipelined requests still get their answers in request order.
    """

    def __init__(self, handler: PushHandler) -> None:
        self._handler = handler
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[Request, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()

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
        if self._worker is None and not self._queue and self._handler.latency_s == 0:
            self._answer(self._handle(request), keep_alive)
        else:
            self._queue.append((request, keep_alive))
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._drain())

    # -- answering -----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Answer queued requests in order, each after the latency current at that moment."""
        try:
            while self._queue and not self._closing:
                request, keep_alive = self._queue.popleft()
                if request.target.startswith("/push/") and self._handler.latency_s > 0:
                    await asyncio.sleep(self._handler.latency_s)
                self._answer(self._handle(request), keep_alive)
        finally:
            self._worker = None

    def _handle(self, request: Request) -> Response | object:
        # The HTTP edge: a bug in the handler becomes a 500 the test sees, not a hung client.
        try:
            return self._handler.handle(request)
        except Exception:
            logger.exception("simulator bug while handling %s %s", request.method, request.target[:40])
            return Response(500, b'{"code": 500, "reason": "simulator bug, see its log"}')

    def _answer(self, response: Response | object, keep_alive: bool) -> None:
        if self._closing or self._transport is None:
            return
        if response is DROP:
            self._reset_connection()
            return
        assert isinstance(response, Response)
        self._transport.write(response.encode(keep_alive))
        if not keep_alive:
            self._close()

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

    def _reset_connection(self) -> None:
        """Close with a TCP RST and no TLS close_notify, like a push service that died."""
        self._closing = True
        self._queue.clear()
        assert self._transport is not None
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


async def serve(handler: PushHandler, host: str, port: int, state_dir: Path) -> None:
    """Listen, announce readiness, and run until told to stop."""
    loop = asyncio.get_running_loop()
    context = make_tls(state_dir / "ca.pem")
    server = await loop.create_server(
        lambda: HttpConnection(handler), host, port, ssl=context, backlog=1024, reuse_address=True
    )
    bound_port = server.sockets[0].getsockname()[1]
    handler.origin = f"https://{host}:{bound_port}"

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _watch_stdin(loop, stop)

    ready = state_dir / "ready.json"
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": bound_port, "pid": os.getpid(), "origin": handler.origin}))
    tmp.replace(ready)  # atomic: the parent never reads half a file
    logger.info("push simulator listening on %s", handler.origin)
    async with server:
        await stop.wait()


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
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
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
    handler = PushHandler(verify=args.verify, latency_ms=args.latency_ms)
    uvloop.run(serve(handler, args.host, args.port, args.state_dir))


if __name__ == "__main__":
    main()
