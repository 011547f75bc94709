"""`PushSimulator`: start the simulator process and drive it from a test or a benchmark."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.pushsim.crypto import b64url_decode, b64url_encode, private_key_pem


class SimulatorError(RuntimeError):
    """The simulator would not start, died, or refused a control call (a test bug)."""


@dataclass(frozen=True, slots=True)
class PushMessage:
    """A push the simulator accepted, as the browser would see it plus the request's metadata."""

    token: str
    plaintext: bytes | None  # None only when sampling skipped (or failed) decryption
    decrypted: bool
    error: str | None
    ttl: int
    urgency: str | None
    topic: str | None
    claims: dict[str, Any]
    headers: dict[str, str]
    body_length: int
    received_at: float
    origin: str = ""  # "https://127.0.0.1:PORT", the origin the push was posted to

    def json(self) -> Any:
        """The plaintext parsed as JSON, as `sw.js` would do."""
        if self.plaintext is None:
            raise ValueError(f"message was not decrypted: {self.error or 'skipped by sampling'}")
        return json.loads(self.plaintext)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PushMessage:
        plaintext = data["plaintext"]
        return cls(
            token=data["token"],
            plaintext=None if plaintext is None else b64url_decode(plaintext),
            decrypted=data["decrypted"],
            error=data["error"],
            ttl=data["ttl"],
            urgency=data["urgency"],
            topic=data["topic"],
            claims=data["claims"],
            headers=data["headers"],
            body_length=data["body_length"],
            received_at=data["received_at"],
            origin=data["origin"],
        )


def token_of(endpoint_or_token: str) -> str:
    """The token from a simulator endpoint URL; a bare token is returned as-is."""
    if "/push/" in endpoint_or_token:
        return endpoint_or_token.rsplit("/push/", 1)[1]
    return endpoint_or_token


OriginRef = int | str
"""An origin: its index in `PushSimulator.origins`, or its URL."""


def _key_text(key: bytes | str) -> str:
    return key if isinstance(key, str) else b64url_encode(key)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; always reaped."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stop_process(process: subprocess.Popen[bytes], state_dir: str) -> None:
    """Close stdin (the server's stop signal), then escalate; always reap, never orphan."""
    if process.poll() is None:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            terminate(process, 5)
    elif process.stdin is not None:
        process.stdin.close()
    shutil.rmtree(state_dir, ignore_errors=True)


class PushSimulator:
    """RFC 8030 push services on https://127.0.0.1:<port>, one per origin, in one process.

    Use as `with PushSimulator() as sim:`. The process is separate so a benchmark can pin
    it to one CPU (`cpu=N`) away from the sender. Every origin has its own port, its own
    subscribers and records and can misbehave on its own (hang, rate-limit, refuse
    connections, fail); all share one CA. The control API lives under `/_sim/` on every
    port and on a control port of its own, which this class uses so that no origin's
    misbehaviour gets in the way; every method here is one call to it. Methods taking an
    `origin` accept its index in `origins` or its URL.

    Args:
        latency_ms: added before each push answer (asyncio sleep; other connections proceed).
        cpu: pin the server process to this CPU.
        verify: 'all' decrypts every message; 'sample:N' every Nth; 'deferred' answers
            first and decrypts all when results are read (see README).
        startup_timeout: seconds to wait for the server before failing loudly.
        origins: how many push-service origins (ports) to serve.
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        cpu: int | None = None,
        verify: str = "all",
        startup_timeout: float = 20.0,
        origins: int = 1,
    ) -> None:
        if isinstance(origins, bool) or not isinstance(origins, int) or origins < 1:
            raise ValueError(f"origins must be an integer >= 1, not {origins!r}")
        self.latency_ms = latency_ms
        self.cpu = cpu
        self.verify = verify
        self.startup_timeout = startup_timeout
        self.origin_count = origins
        self.port = 0  # the first origin's
        self.origin = ""  # the first origin, "https://127.0.0.1:PORT"
        self.ports: list[int] = []
        self.origins: list[str] = []
        self.authorities: list[str] = []  # "127.0.0.1:PORT", as STORYPUSH_PUSH_HOSTS lists them
        self.control_port = 0
        self.ca_file = ""
        self.pid = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._state_dir = ""
        self._ssl: ssl.SSLContext | None = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> PushSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> PushSimulator:
        """Start the server process and return once it answers over TLS."""
        if self._process is not None:
            raise SimulatorError("simulator already started")
        self._state_dir = tempfile.mkdtemp(prefix="pushsim-")
        state = Path(self._state_dir)
        command = [
            sys.executable,
            "-m",
            "benchmarks.pushsim.server",
            "--state-dir",
            self._state_dir,
            "--latency-ms",
            str(self.latency_ms),
            "--verify",
            self.verify,
            "--origins",
            str(self.origin_count),
        ]
        if self.cpu is not None:
            command += ["--cpu", str(self.cpu)]
        log = open(state / "server.log", "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._finalizer = weakref.finalize(self, _stop_process, self._process, self._state_dir)
        try:
            ready = self._wait_ready(state / "ready.json")
            self.ports = [int(port) for port in ready["ports"]]
            self.authorities = [f"127.0.0.1:{port}" for port in self.ports]
            self.origins = [f"https://{authority}" for authority in self.authorities]
            self.port, self.origin = self.ports[0], self.origins[0]
            self.control_port = int(ready["control_port"])
            self.pid = int(ready["pid"])
            self.ca_file = str(state / "ca.pem")
            self._ssl = ssl.create_default_context(cafile=self.ca_file)
            self._call("GET", "health")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, ready: Path) -> dict[str, Any]:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if ready.exists():
                return json.loads(ready.read_text())
            if self._process.poll() is not None:
                raise SimulatorError(f"simulator exited with {self._process.returncode}:\n{self._log_tail()}")
            time.sleep(0.02)
        raise SimulatorError(f"simulator not ready after {self.startup_timeout}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return (Path(self._state_dir) / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the process and wait for it; safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_process once
            self._finalizer = None
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the simulator's CA."""
        return ssl.create_default_context(cafile=self.ca_file)

    def endpoint(self, token: str, origin: int = 0) -> str:
        """The endpoint URL of a token on the origin with this index."""
        return f"{self.origins[origin]}/push/{token}"

    # -- control API ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        action: str,
        payload: dict[str, Any] | None = None,
        token: str | None = None,
        origin: OriginRef | None = None,
    ) -> Any:
        if self._ssl is None:
            raise SimulatorError("simulator is not running")
        query = {name: str(value) for name, value in (("token", token), ("origin", origin)) if value is not None}
        path = f"/_sim/{action}" + (f"?{urlencode(query)}" if query else "")
        body = None if payload is None else json.dumps(payload).encode()
        # A fresh connection per call: control calls are rare, and this never trips over a
        # connection the server closed (e.g. after a drop). The control port is never hung,
        # throttled or refused, whatever the origins do.
        connection = http.client.HTTPSConnection("127.0.0.1", self.control_port, context=self._ssl, timeout=120)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise SimulatorError(f"{method} {path} -> {response.status}: {data[:500]!r}")
        return json.loads(data)

    def mint(self, n: int, application_server_key: bytes | str, origin: OriginRef = 0) -> list[dict[str, Any]]:
        """Create n subscribers bound to this applicationServerKey (65-byte point or b64url).

        Returns `PushSubscription.toJSON()`-shaped dicts whose endpoints are on `origin`
        (pushed to any other origin, the token is unknown: 404); the simulator keeps the
        private keys.
        """
        payload = {"n": n, "application_server_key": _key_text(application_server_key), "origin": origin}
        return self._call("POST", "mint", payload)["subscriptions"]

    def register(
        self,
        token: str,
        private_key: ec.EllipticCurvePrivateKey | bytes | str,
        auth: bytes,
        application_server_key: bytes | str,
        origin: OriginRef = 0,
    ) -> dict[str, Any]:
        """Register a subscriber whose keys the test made; returns its subscription dict.

        `private_key` is a key object, PEM (bytes or text) or the raw 32-byte scalar.
        """
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            key_text = private_key_pem(private_key)
        elif isinstance(private_key, bytes) and not private_key.lstrip().startswith(b"-----BEGIN"):
            key_text = private_key_pem(ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1()))
        else:
            key_text = private_key.decode("ascii") if isinstance(private_key, bytes) else private_key
        payload = {
            "token": token,
            "private_key": key_text,
            "auth": b64url_encode(auth),
            "application_server_key": _key_text(application_server_key),
            "origin": origin,
        }
        return self._call("POST", "register", payload)["subscription"]

    def messages(self, token: str | None = None, origin: OriginRef | None = None) -> list[PushMessage]:
        """Accepted pushes in arrival order, for one token (or endpoint) or all, on one origin or all."""
        data = self._call("GET", "messages", token=None if token is None else token_of(token), origin=origin)
        return [PushMessage.from_json(item) for item in data["messages"]]

    def rejections(self, token: str | None = None, origin: OriginRef | None = None) -> list[dict[str, Any]]:
        """Requests not delivered, in arrival order: `{origin, token, status, reason, received_at}`.

        `status` is None when nothing was answered: the connection was reset, or the origin hung.
        """
        data = self._call("GET", "rejections", token=None if token is None else token_of(token), origin=origin)
        return data["rejections"]

    def stats(self, origin: OriginRef | None = None) -> dict[str, Any]:
        """Counts: requests, by_status, delivered, rejected, faulted, dropped, throttled, hung,
        decrypted, decrypt_errors, reasons.

        For one origin, or totals over all of them plus `by_origin`: {origin URL: its counts}.
        """
        return self._call("GET", "stats", origin=origin)

    def reset(self, subscribers: bool = False) -> None:
        """Forget records and faults (and subscribers too if asked), and end every origin's
        misbehaviour (hang, rate limit, refusal, failure); latency is kept."""
        self._call("POST", "reset", {"subscribers": subscribers})

    def fail(
        self,
        token: str,
        statuses: Sequence[int] | int,
        *,
        retry_after: str | int | None = None,
        always: bool = False,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Script the next answers for a token: `fail(t, [429, 429], retry_after="2")`.

        With `always=True` the (single) status is answered for every request until changed;
        `fail(t, [])` clears the script. Faulted requests are never recorded as delivered.
        `reason` is the JSON body's "reason" (default "injected fault"; Apple answers a 429
        about one device with "TooManyRequests"), `headers` more headers to answer with
        (WNS: `{"X-WNS-Status": "channelthrottled"}`).
        """
        codes = [statuses] if isinstance(statuses, int) else list(statuses)
        payload: dict[str, Any] = {
            "token": token_of(token),
            "retry_after": None if retry_after is None else str(retry_after),
            "reason": reason,
            "headers": headers or {},
        }
        if always:
            if len(codes) != 1:
                raise ValueError("always=True takes exactly one status")
            payload.update(statuses=[], always=codes[0])
        else:
            payload.update(statuses=codes, always=None)
        self._call("POST", "fail", payload)

    def drop(self, token: str, times: int = 1) -> None:
        """Reset the TCP connection without answering the next `times` requests to token."""
        self._call("POST", "drop", {"token": token_of(token), "times": times})

    def set_latency(self, ms: float, origin: OriginRef | None = None, spread: float = 0.0) -> None:
        """Delay push answers by `ms` from now on, on every origin or on one (control calls never).
        With `spread` (σ, at most 3), each answer's delay is a log-normal draw whose median is
        `ms`: 0.5 puts a tenth of the answers past 1.9 × `ms`, as real push services spread."""
        self._call("POST", "latency", {"ms": ms, "origin": origin, "spread": spread})
        if origin is None:
            self.latency_ms = ms

    def hang(self, origin: OriginRef, on: bool = True) -> None:
        """Make an origin read pushes and never answer them (on=False: answer new ones again).

        Hung requests stay open until the client gives up; anything sent after one on the
        same connection is never answered either. Other origins and connections go on.
        """
        self._call("POST", "hang", {"origin": origin, "on": on})

    def early_hints(self, origin: OriginRef, on: bool = True) -> None:
        """Precede every answer on an origin with an interim `103 Early Hints` (carrying a
        `Retry-After: 3600` that belongs to no final answer), as RFC 9110 lets a server do
        unasked; on=False stops it."""
        self._call("POST", "early_hints", {"origin": origin, "on": on})

    def framing(self, origin: OriginRef, framing: str | None) -> None:
        """Frame an origin's push answers as HTTP/1.1 allows but few servers do: "close"
        sends no Content-Length and ends the body by closing the connection (RFC 9112 §6.3);
        "stall" sends the status and headers but never the body's last byte (the
        connection then answers nothing more); "flood" sends the status line and then one
        header whose value never ends, until the client hangs up. The push is delivered
        each way. None: Content-Length again."""
        self._call("POST", "framing", {"origin": origin, "framing": framing})

    def rate_limit(
        self,
        origin: OriginRef,
        per_second: float | None,
        *,
        burst: int | None = None,
        retry_after: str | int | None = "1",
        status: int = 429,
    ) -> None:
        """Throttle an origin with a token bucket (`per_second=None` removes the limit).

        The bucket holds `burst` tokens (default: `per_second`, at least 1), starts full and
        refills at `per_second`. A push finding it empty is answered `status` (429; 503 as
        Mozilla autopush throttles; 406 as WNS does) with `Retry-After: retry_after`
        (seconds, or "date" for an HTTP-date at least 1 s ahead; None: no header) and is not
        delivered. Scripted per-token faults are answered before the bucket is asked.
        """
        payload = {
            "origin": origin,
            "per_second": per_second,
            "burst": burst,
            "retry_after": None if retry_after is None else str(retry_after),
            "status": status,
        }
        self._call("POST", "rate_limit", payload)

    def refuse_connections(self, origin: OriginRef, on: bool = True) -> None:
        """Stop listening on an origin's port (connects get ECONNREFUSED, open connections are
        reset); on=False listens again on the same port."""
        self._call("POST", "refuse_connections", {"origin": origin, "on": on})

    def fail_origin(self, origin: OriginRef, status: int | str | None) -> None:
        """Answer every push to an origin with `status`, or reset the connection with "drop";
        None clears."""
        self._call("POST", "fail_origin", {"origin": origin, "status": status})


def b64url(data: bytes) -> str:
    """Re-exported for tests: the encoding Web Push uses for keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
