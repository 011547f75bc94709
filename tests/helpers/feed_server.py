"""A real HTTP server on 127.0.0.1 serving feeds that a test changes between polls.

It honours conditional GET the way publishers' servers do (304 when `If-None-Match` matches
the ETag or `If-Modified-Since` equals Last-Modified) and records every request, so tests
assert on what storypush actually sent over the wire.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0  # before answering
    drip: float = 0.0  # between body bytes
    gzip: bool = False


@dataclass(frozen=True)
class Hit:
    path: str
    at: float
    headers: dict[str, str]
    status: int


class FeedServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(server.routes.get(self.path))

            def _answer(self, route: Route | None) -> None:
                if route is None:
                    self._send(404, {"Content-Type": "text/plain"}, b"not found")
                    return
                time.sleep(route.delay)
                validators = {}
                if route.etag:
                    validators["ETag"] = route.etag
                if route.last_modified:
                    validators["Last-Modified"] = route.last_modified
                unchanged = (route.etag and self.headers.get("If-None-Match") == route.etag) or (
                    route.last_modified and self.headers.get("If-Modified-Since") == route.last_modified
                )
                if unchanged and route.status == 200:
                    self._send(304, validators, b"")
                    return
                body = gzip.compress(route.body) if route.gzip else route.body
                headers = {"Content-Type": route.content_type, **validators, **route.headers}
                if route.gzip:
                    headers["Content-Encoding"] = "gzip"
                self._send(route.status, headers, body, route.drip)

            def _send(self, status: int, headers: dict[str, str], body: bytes, drip: float = 0.0) -> None:
                # Recorded before answering: a client that has its answer may look at once.
                with server._lock:
                    server.hits.append(Hit(self.path, time.time(), dict(self.headers), status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:  # a route may declare its own (even a wrong one)
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if not drip:
                        self.wfile.write(body)
                        return
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(drip)
                except OSError:
                    pass  # the client gave up (a timeout test)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hung up early (timeout and size tests) is expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.authority = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.authority}{path}"

    def serve(self, path: str, body: bytes | str, content_type: str | None = None, **options: object) -> Route:
        route = Route(body=body.encode() if isinstance(body, str) else body, **options)  # type: ignore[arg-type]
        if content_type:
            route.content_type = content_type
        self.routes[path] = route
        return route

    def redirect(self, path: str, location: str, status: int = 301) -> None:
        self.routes[path] = Route(status=status, headers={"Location": location}, content_type="text/plain")

    def hits_for(self, path: str) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if hit.path == path]


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)
