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
from urllib.parse import quote

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
        )


def token_of(endpoint_or_token: str) -> str:
    """The token from a simulator endpoint URL; a bare token is returned as-is."""
    if "/push/" in endpoint_or_token:
        return endpoint_or_token.rsplit("/push/", 1)[1]
    return endpoint_or_token


def _key_text(key: bytes | str) -> str:
    return key if isinstance(key, str) else b64url_encode(key)


def _stop_process(process: subprocess.Popen[bytes], state_dir: str) -> None:
    """Close stdin (the server's stop signal), then escalate; always reap, never orphan."""
    if process.poll() is None:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    elif process.stdin is not None:
        process.stdin.close()
    shutil.rmtree(state_dir, ignore_errors=True)


class PushSimulator:
    """An RFC 8030 push service on https://127.0.0.1:<port>, in its own process.

    Use as `with PushSimulator() as sim:`. The process is separate so a benchmark can pin
    it to one CPU (`cpu=N`) away from the sender; its control API lives under `/_sim/` on
    the same HTTPS port and every method here is one call to it.

    Args:
        latency_ms: added before each push answer (asyncio sleep; other connections proceed).
        cpu: pin the server process to this CPU.
        verify: 'all' decrypts every message; 'sample:N' every Nth; 'deferred' answers
            first and decrypts all when results are read (see README).
        startup_timeout: seconds to wait for the server before failing loudly.
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        cpu: int | None = None,
        verify: str = "all",
        startup_timeout: float = 20.0,
    ) -> None:
        self.latency_ms = latency_ms
        self.cpu = cpu
        self.verify = verify
        self.startup_timeout = startup_timeout
        self.port = 0
        self.origin = ""
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
            self.port = int(ready["port"])
            self.pid = int(ready["pid"])
            self.origin = f"https://127.0.0.1:{self.port}"
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

    def endpoint(self, token: str) -> str:
        return f"{self.origin}/push/{token}"

    # -- control API ---------------------------------------------------------------------

    def _call(self, method: str, action: str, payload: dict[str, Any] | None = None, token: str | None = None) -> Any:
        if self._ssl is None:
            raise SimulatorError("simulator is not running")
        path = f"/_sim/{action}" + ("" if token is None else f"?token={quote(token)}")
        body = None if payload is None else json.dumps(payload).encode()
        # A fresh connection per call: control calls are rare, and this never trips over a
        # connection the server closed (e.g. after a drop).
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ssl, timeout=120)
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

    def mint(self, n: int, application_server_key: bytes | str) -> list[dict[str, Any]]:
        """Create n subscribers bound to this applicationServerKey (65-byte point or b64url).

        Returns `PushSubscription.toJSON()`-shaped dicts; the simulator keeps the private keys.
        """
        payload = {"n": n, "application_server_key": _key_text(application_server_key)}
        return self._call("POST", "mint", payload)["subscriptions"]

    def register(
        self,
        token: str,
        private_key: ec.EllipticCurvePrivateKey | bytes | str,
        auth: bytes,
        application_server_key: bytes | str,
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
        }
        return self._call("POST", "register", payload)["subscription"]

    def messages(self, token: str | None = None) -> list[PushMessage]:
        """Accepted pushes in arrival order, for one token (or endpoint) or all."""
        data = self._call("GET", "messages", token=None if token is None else token_of(token))
        return [PushMessage.from_json(item) for item in data["messages"]]

    def rejections(self, token: str | None = None) -> list[dict[str, Any]]:
        """Requests not delivered: `{token, status, reason, received_at}` (status None = dropped)."""
        data = self._call("GET", "rejections", token=None if token is None else token_of(token))
        return data["rejections"]

    def stats(self) -> dict[str, Any]:
        """Totals: requests, by_status, delivered, rejected, faulted, dropped, decrypted, decrypt_errors, reasons."""
        return self._call("GET", "stats")

    def reset(self, subscribers: bool = False) -> None:
        """Forget records and faults (and subscribers too if asked); latency is kept."""
        self._call("POST", "reset", {"subscribers": subscribers})

    def fail(
        self, token: str, statuses: Sequence[int] | int, *, retry_after: str | int | None = None, always: bool = False
    ) -> None:
        """Script the next answers for a token: `fail(t, [429, 429], retry_after="2")`.

        With `always=True` the (single) status is answered for every request until changed;
        `fail(t, [])` clears the script. Faulted requests are never recorded as delivered.
        """
        codes = [statuses] if isinstance(statuses, int) else list(statuses)
        payload: dict[str, Any] = {
            "token": token_of(token),
            "retry_after": None if retry_after is None else str(retry_after),
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

    def set_latency(self, ms: float) -> None:
        """Delay every push answer by `ms` from now on (control calls are not delayed)."""
        self._call("POST", "latency", {"ms": ms})
        self.latency_ms = ms


def b64url(data: bytes) -> str:
    """Re-exported for tests: the encoding Web Push uses for keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
