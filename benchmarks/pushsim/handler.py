"""Request handling: the RFC 8030 push endpoint and the `/_sim/` control API.

Synchronous and free of sockets: the server hands in a parsed `Request` and writes back
the `Response` (or drops the connection), so every check here is plain, testable code.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from benchmarks.pushsim.crypto import (
    DecryptError,
    JwtVerifier,
    SubscriberKeys,
    VapidError,
    b64url_decode,
    b64url_encode,
    check_aes128gcm_header,
    check_point,
    decrypt,
    load_private_key,
    public_bytes,
)
from benchmarks.pushsim.state import Fault, Message, Recorder, Subscriber

logger = logging.getLogger(__name__)

# RFC 8030 §7.2 says 4096 bytes is the minimum a push service must accept; FCM and
# autopush refuse more, so a sender exceeding it has a bug we want to see.
MAX_PUSH_BODY = 4096
# Bigger control bodies exist (register, mint); anything past this is not a client of ours.
MAX_REQUEST_BODY = 1 << 20
MAX_MINT = 200_000
# ~140 characters, the length of real FCM endpoint tokens, so length limits get exercised.
TOKEN_BYTES = 105
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,512}")
_TTL = re.compile(r"[0-9]{1,10}")
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, keep_alive: bool) -> bytes:
        """HTTP/1.1 wire form; always with Content-Length so keep-alive framing is exact."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


DROP = object()
"""Returned instead of a Response: close the connection without answering."""


def _error(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps({"code": status, "reason": reason}).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def _json(payload: object, status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode(), [("Content-Type", "application/json")])


class ControlError(Exception):
    """A control API call the test got wrong; answered 400 with the message."""


def parse_verify(spec: str) -> tuple[str, int]:
    """Parse the `verify` option: 'all', 'sample:N' (decrypt every Nth) or 'deferred'.

    'deferred' answers 201 after the cheap checks and decrypts every message when results
    are next read (messages/stats), so a benchmark measures the sender, not our ECDH,
    yet still proves every body decrypts.
    """
    if spec in ("all", "deferred"):
        return spec, 1
    mode, _, every = spec.partition(":")
    if mode == "sample" and every.isdigit() and int(every) >= 1:
        return "sample", int(every)
    raise ValueError(f"verify must be 'all', 'sample:N' or 'deferred', not {spec!r}")


class PushHandler:
    """One simulated push service: its subscribers, faults, latency and records."""

    def __init__(self, verify: str = "all", latency_ms: float = 0.0) -> None:
        self.verify_mode, self.verify_every = parse_verify(verify)
        self.latency_s = latency_ms / 1000
        self.origin = ""  # set by the server once the port is bound
        self.subscribers: dict[str, Subscriber] = {}
        self.faults: dict[str, Fault] = {}
        self.recorder = Recorder()
        self._jwt = JwtVerifier()
        self._seen = 0
        self._pending = False
        self._location_ids = itertools.count(1)

    # -- push endpoint -------------------------------------------------------------------

    def handle(self, request: Request) -> Response | object:
        """Dispatch one request; returns a Response or DROP."""
        path, _, query = request.target.partition("?")
        if path.startswith("/push/"):
            if request.method != "POST":
                return _error(405, "push endpoints accept POST only", [("Allow", "POST")])
            return self.push(path[6:], request)
        if path.startswith("/_sim/"):
            try:
                return self.control(request.method, path[6:], parse_qs(query), request.body)
            except (ControlError, ValueError, KeyError, TypeError) as exc:
                return _error(400, f"control API: {exc!r}")
        return _error(404, "no such resource")

    def push(self, token: str, request: Request) -> Response | object:
        """RFC 8030 §5 message delivery, with every check a strict push service makes."""
        recorder = self.recorder
        recorder.requests += 1
        fault = self.faults.get(token)
        if fault is not None:
            action = fault.next_action()
            if fault.is_spent():
                del self.faults[token]
            if action == "drop":
                recorder.reject(token, None, "injected drop")
                return DROP
            if action is not None:
                assert isinstance(action, int)
                recorder.reject(token, action, "injected fault", fault=True)
                extra = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
                return _error(action, "injected fault", extra)

        subscriber = self.subscribers.get(token)
        if subscriber is None:
            return self._reject(token, 404, "unknown subscription")
        headers = request.headers
        authorization = headers.get("authorization")
        if authorization is None:
            return self._reject(token, 401, "missing Authorization header")
        now = time.time()
        try:
            claims = self._jwt.verify(authorization, subscriber.application_server_key, self.origin, now)
        except VapidError as exc:
            return self._reject(token, exc.status, exc.reason)

        ttl = headers.get("ttl")
        if ttl is None or not _TTL.fullmatch(ttl):
            return self._reject(token, 400, "TTL header missing or not a non-negative integer")
        if headers.get("content-encoding", "").lower() != "aes128gcm":
            return self._reject(token, 400, "Content-Encoding must be aes128gcm")
        urgency = headers.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            return self._reject(token, 400, f"Urgency {urgency[:16]!r} is not very-low/low/normal/high")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC.fullmatch(topic):
            return self._reject(token, 400, "Topic must be 1-32 base64url characters without padding")
        body = request.body
        if len(body) > MAX_PUSH_BODY:
            return self._reject(token, 413, f"body of {len(body)} bytes exceeds {MAX_PUSH_BODY}")

        message = Message(token, now, int(ttl), urgency, topic, claims, headers, len(body))
        try:
            self._decrypt_or_defer(message, body, subscriber.keys)
        except DecryptError as exc:
            return self._reject(token, 400, f"cannot decrypt: {exc}")
        recorder.messages.append(message)
        recorder.by_status[201] += 1
        # RFC 8030 §5: the Location names the message resource; a counter is opaque enough.
        return Response(201, b"", [("Location", f"{self.origin}/m/{next(self._location_ids):x}")])

    def _reject(self, token: str, status: int, reason: str) -> Response:
        self.recorder.reject(token, status, reason)
        return _error(status, reason)

    def _decrypt_or_defer(self, message: Message, body: bytes, keys: SubscriberKeys) -> None:
        self._seen += 1
        if self.verify_mode == "deferred":
            check_aes128gcm_header(body)
            message.pending = (body, keys)
            self._pending = True
        elif self.verify_mode == "all" or (self._seen - 1) % self.verify_every == 0:
            message.plaintext = decrypt(body, keys)
            message.decrypted = True
            self.recorder.decrypted += 1
        else:
            check_aes128gcm_header(body)

    def settle(self) -> None:
        """Decrypt every deferred message; failures stay recorded as `error` on the message."""
        if not self._pending:
            return
        for message in self.recorder.messages:
            if message.pending is None:
                continue
            body, keys = message.pending
            message.pending = None
            try:
                message.plaintext = decrypt(body, keys)
                message.decrypted = True
                self.recorder.decrypted += 1
            except DecryptError as exc:
                message.error = f"cannot decrypt: {exc}"
                self.recorder.decrypt_errors += 1
        self._pending = False

    # -- control API ---------------------------------------------------------------------

    def control(self, method: str, action: str, query: dict[str, list[str]], body: bytes) -> Response:
        """`/_sim/<action>`: GET reads records, POST changes state (JSON in, JSON out)."""
        token = query.get("token", [None])[0]
        if method == "GET":
            if action == "health":
                return _json({"ok": True, "origin": self.origin})
            self.settle()
            records = self.recorder
            if action == "messages":
                return _json({"messages": [m.to_json() for m in records.messages if token in (None, m.token)]})
            if action == "rejections":
                return _json({"rejections": [r.to_json() for r in records.rejections if token in (None, r.token)]})
            if action == "stats":
                return _json(records.stats())
            return _error(404, f"no control action GET {action}")
        if method != "POST":
            return _error(405, "control API accepts GET and POST")
        args = json.loads(body or b"{}")
        if not isinstance(args, dict):
            raise ControlError("body must be a JSON object")
        handler = {
            "mint": self._mint,
            "register": self._register,
            "fail": self._fail,
            "drop": self._drop,
            "latency": self._latency,
            "reset": self._reset,
        }.get(action)
        if handler is None:
            return _error(404, f"no control action POST {action}")
        return _json(handler(args))

    def _subscription_json(self, subscriber: Subscriber) -> dict:
        return {
            "endpoint": f"{self.origin}/push/{subscriber.token}",
            "expirationTime": None,
            "keys": {"p256dh": b64url_encode(subscriber.keys.p256dh), "auth": b64url_encode(subscriber.keys.auth)},
        }

    def _mint(self, args: dict) -> dict:
        n = int(args["n"])
        if not 0 <= n <= MAX_MINT:
            raise ControlError(f"n must be within 0..{MAX_MINT}")
        server_key = check_point(b64url_decode(args["application_server_key"]), "application_server_key")
        minted = []
        for _ in range(n):
            subscriber = Subscriber(secrets.token_urlsafe(TOKEN_BYTES), SubscriberKeys.generate(), server_key)
            self.subscribers[subscriber.token] = subscriber
            minted.append(self._subscription_json(subscriber))
        gc.freeze()  # subscribers live until reset: keep them out of every later collection
        return {"subscriptions": minted}

    def _register(self, args: dict) -> dict:
        token = str(args["token"])
        if not _TOKEN.fullmatch(token):
            raise ControlError("token must be 1-512 base64url characters")
        key = load_private_key(args["private_key"])
        auth = b64url_decode(args["auth"])
        if len(auth) != 16:
            raise ControlError("auth must be 16 bytes")
        server_key = check_point(b64url_decode(args["application_server_key"]), "application_server_key")
        keys = SubscriberKeys(key, public_bytes(key), auth)
        subscriber = Subscriber(token, keys, server_key)
        self.subscribers[token] = subscriber
        return {"subscription": self._subscription_json(subscriber)}

    def _fault_for(self, token: str) -> Fault:
        if not _TOKEN.fullmatch(token):
            raise ControlError("token must be 1-512 base64url characters")
        return self.faults.setdefault(token, Fault())

    def _fail(self, args: dict) -> dict:
        token = str(args["token"])
        statuses = [int(status) for status in args.get("statuses", [])]
        always = args.get("always")
        if any(not 100 <= status <= 599 for status in [*statuses, *([always] if always else [])]):
            raise ControlError("statuses must be HTTP status codes")
        fault = self._fault_for(token)
        fault.script.clear()
        fault.script.extend(statuses)
        fault.always = None if always is None else int(always)
        fault.retry_after = None if args.get("retry_after") is None else str(args["retry_after"])
        if fault.is_spent():
            del self.faults[token]
        return {}

    def _drop(self, args: dict) -> dict:
        times = int(args.get("times", 1))
        if times < 0:
            raise ControlError("times must be >= 0")
        token = str(args["token"])
        fault = self._fault_for(token)
        fault.drops = times
        if fault.is_spent():
            del self.faults[token]
        return {}

    def _latency(self, args: dict) -> dict:
        ms = float(args["ms"])
        if ms < 0:
            raise ControlError("latency must be >= 0 ms")
        self.latency_s = ms / 1000
        return {}

    def _reset(self, args: dict) -> dict:
        self.recorder = Recorder()
        self.faults.clear()
        self._seen = 0
        self._pending = False
        if args.get("subscribers"):
            self.subscribers.clear()
        return {}
