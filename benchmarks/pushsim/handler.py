"""Request handling: the RFC 8030 push endpoint of every origin and the `/_sim/` control API.

Free of sockets: the server hands in a parsed `Request` and the origin (port) it came in
on, and writes back the `Response` (or drops the connection, or never answers), so every
check here is plain, testable code. Pushes are answered synchronously; control calls are
coroutines because reopening a refused origin's port has to wait for the event loop.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol
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
from benchmarks.pushsim.origins import Origin, Throttle, check_failure, check_framing
from benchmarks.pushsim.state import Fault, Message, Outcome, Subscriber, merge_stats, stats_json

logger = logging.getLogger(__name__)

# RFC 8030 §7.2 says 4096 bytes is the minimum a push service must accept; FCM and
# autopush refuse more, so a sender exceeding it has a bug we want to see.
MAX_PUSH_BODY = 4096
# Bigger control bodies exist (register, mint); anything past this is not a client of ours.
MAX_REQUEST_BODY = 1 << 20
MAX_MINT = 200_000
# One process serves every origin on its own port; more would only be a mistake.
MAX_ORIGINS = 64
# σ of a latency's log-normal spread: 3 already puts one answer in a hundred past 1,000× the median.
MAX_LATENCY_SPREAD = 3.0
# ~140 characters, the length of real FCM endpoint tokens, so length limits get exercised.
TOKEN_BYTES = 105
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,512}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_TTL = re.compile(r"[0-9]{1,10}")
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
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

    def encode(self, keep_alive: bool, framing: str | None = None) -> bytes:
        """HTTP/1.1 wire form, with Content-Length so keep-alive framing is exact; or framed
        as a misbehaving origin asks (`origins.FRAMINGS`): "close" leaves the length out (the
        body ends when the connection closes, RFC 9112 §6.3), "stall" promises one byte
        more than it sends."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if framing != "close":
            lines.append(f"Content-Length: {len(self.body) + (framing == 'stall')}")
        if not keep_alive or framing == "close":
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


DROP = object()
"""Returned instead of a Response: close the connection without answering."""

HANG = object()
"""Returned instead of a Response: never answer (this or anything after it on the connection)."""

_BY_SEQ = attrgetter("seq")


def _error(status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps({"code": status, "reason": reason}).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def _json(payload: object, status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode(), [("Content-Type", "application/json")])


class ControlError(Exception):
    """A control API call the test got wrong; answered 400 with the message."""


def _answer_text(value: object, what: str) -> str:
    """A header value or error reason a test scripts: printable ASCII on one line."""
    text = str(value)
    if not 0 < len(text) <= 200 or not text.isascii() or not text.isprintable():
        raise ControlError(f"{what} must be 1-200 printable ASCII characters")
    return text


class Listeners(Protocol):
    """The server's side of `refuse_connections`: close or reopen an origin's port."""

    async def set_listening(self, origin: Origin, on: bool) -> None: ...


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
    """The simulated push services, one `Origin` per port, and the control API over them.

    Subscribers belong to the origin they were minted on (a token is unknown elsewhere);
    scripted per-token faults follow the token to whichever origin it is posted to.
    """

    def __init__(self, verify: str = "all", latency_ms: float = 0.0, origins: int = 1) -> None:
        self.verify_mode, self.verify_every = parse_verify(verify)
        if isinstance(origins, bool) or not isinstance(origins, int) or not 1 <= origins <= MAX_ORIGINS:
            raise ValueError(f"origins must be an integer within 1..{MAX_ORIGINS}, not {origins!r}")
        if latency_ms < 0:
            raise ValueError("latency must be >= 0 ms")
        seq = itertools.count()
        self.origins = [Origin(index, seq, latency_s=latency_ms / 1000) for index in range(origins)]
        self.faults: dict[str, Fault] = {}
        self.listeners: Listeners | None = None  # set by the server; needed by refuse_connections
        self._jwt = JwtVerifier()
        self._seen = 0
        self._location_ids = itertools.count(1)

    # -- push endpoint -------------------------------------------------------------------

    def handle(self, request: Request, origin: Origin | None) -> object:
        """Dispatch one request that came in on `origin`'s port (None: the control port).

        Returns a Response, DROP or HANG for a push, a coroutine giving the Response for a
        control call.
        """
        path, _, query = request.target.partition("?")
        if path.startswith("/push/"):
            if origin is None:
                return _error(404, "this port serves the control API only")
            if request.method != "POST":
                return _error(405, "push endpoints accept POST only", [("Allow", "POST")])
            return self.push(origin, path[6:], request)
        if path.startswith("/_sim/"):
            return self.control(request.method, path[6:], parse_qs(query), request.body)
        return _error(404, "no such resource")

    def push(self, origin: Origin, token: str, request: Request) -> Response | object:
        """RFC 8030 §5 message delivery, with every check a strict push service makes."""
        recorder = origin.recorder
        recorder.requests += 1
        if origin.hanging:
            recorder.reject(token, None, "origin hangs: read, never answered", Outcome.HUNG)
            return HANG
        if origin.failure is not None:
            return self._origin_failure(origin, token)
        fault = self.faults.get(token)
        if fault is not None:
            action = fault.next_action()
            if fault.is_spent():
                del self.faults[token]
            if action == "drop":
                recorder.reject(token, None, "injected drop", Outcome.DROPPED)
                return DROP
            if action is not None:
                assert isinstance(action, int)
                recorder.reject(token, action, "injected fault", Outcome.FAULTED)
                extra = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
                return _error(action, fault.reason, [*extra, *fault.headers])
        throttle = origin.throttle
        if throttle is not None and not throttle.take():
            return self._throttled(origin, token, throttle)

        subscriber = origin.subscribers.get(token)
        if subscriber is None:
            return self._reject(origin, token, 404, "unknown subscription")
        headers = request.headers
        authorization = headers.get("authorization")
        if authorization is None:
            return self._reject(origin, token, 401, "missing Authorization header")
        now = time.time()
        try:
            claims = self._jwt.verify(authorization, subscriber.application_server_key, origin.url, now)
        except VapidError as exc:
            return self._reject(origin, token, exc.status, exc.reason)

        ttl = headers.get("ttl")
        if ttl is None or not _TTL.fullmatch(ttl):
            return self._reject(origin, token, 400, "TTL header missing or not a non-negative integer")
        if headers.get("content-encoding", "").lower() != "aes128gcm":
            return self._reject(origin, token, 400, "Content-Encoding must be aes128gcm")
        urgency = headers.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            return self._reject(origin, token, 400, f"Urgency {urgency[:16]!r} is not very-low/low/normal/high")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC.fullmatch(topic):
            return self._reject(origin, token, 400, "Topic must be 1-32 base64url characters without padding")
        body = request.body
        if len(body) > MAX_PUSH_BODY:
            return self._reject(origin, token, 413, f"body of {len(body)} bytes exceeds {MAX_PUSH_BODY}")

        message = Message(
            next(origin.seq), origin.url, token, now, int(ttl), urgency, topic, claims, headers, len(body)
        )
        try:
            self._decrypt_or_defer(origin, message, body, subscriber.keys)
        except DecryptError as exc:
            return self._reject(origin, token, 400, f"cannot decrypt: {exc}")
        recorder.messages.append(message)
        recorder.by_status[201] += 1
        # RFC 8030 §5: the Location names the message resource; a counter is opaque enough.
        return Response(201, b"", [("Location", f"{origin.url}/m/{next(self._location_ids):x}")])

    def hung(self, origin: Origin, request: Request) -> None:
        """Record a push that arrived behind a hung one on its connection: it is never answered."""
        path = request.target.partition("?")[0]
        if path.startswith("/push/"):
            origin.recorder.requests += 1
            origin.recorder.reject(path[6:], None, "queued behind a hung request, never answered", Outcome.HUNG)

    def _origin_failure(self, origin: Origin, token: str) -> Response | object:
        if origin.failure == "drop":
            origin.recorder.reject(token, None, "origin failing: connection reset", Outcome.DROPPED)
            return DROP
        assert isinstance(origin.failure, int)
        origin.recorder.reject(token, origin.failure, "origin failing", Outcome.FAULTED)
        return _error(origin.failure, "origin failing")

    @staticmethod
    def _throttled(origin: Origin, token: str, throttle: Throttle) -> Response:
        origin.recorder.reject(token, throttle.status, "rate limited", Outcome.THROTTLED)
        retry_after = throttle.retry_after_header()
        headers = [] if retry_after is None else [("Retry-After", retry_after)]
        if throttle.status == 406:
            headers.append(("X-WNS-Status", "channelthrottled"))  # how WNS says it, besides the 406
        return _error(throttle.status, "rate limited: back off", headers)

    @staticmethod
    def _reject(origin: Origin, token: str, status: int, reason: str) -> Response:
        origin.recorder.reject(token, status, reason)
        return _error(status, reason)

    def _decrypt_or_defer(self, origin: Origin, message: Message, body: bytes, keys: SubscriberKeys) -> None:
        self._seen += 1
        if self.verify_mode == "deferred":
            check_aes128gcm_header(body)
            message.pending = (body, keys)
            origin.recorder.pending = True
        elif self.verify_mode == "all" or (self._seen - 1) % self.verify_every == 0:
            message.plaintext = decrypt(body, keys)
            message.decrypted = True
            origin.recorder.decrypted += 1
        else:
            check_aes128gcm_header(body)

    def settle(self) -> None:
        """Decrypt every deferred message; failures stay recorded as `error` on the message."""
        for origin in self.origins:
            recorder = origin.recorder
            if not recorder.pending:
                continue
            for message in recorder.messages:
                if message.pending is None:
                    continue
                body, keys = message.pending
                message.pending = None
                try:
                    message.plaintext = decrypt(body, keys)
                    message.decrypted = True
                    recorder.decrypted += 1
                except DecryptError as exc:
                    message.error = f"cannot decrypt: {exc}"
                    recorder.decrypt_errors += 1
            recorder.pending = False

    # -- control API ---------------------------------------------------------------------

    async def control(self, method: str, action: str, query: dict[str, list[str]], body: bytes) -> Response:
        """`/_sim/<action>`: GET reads records, POST changes state (JSON in, JSON out)."""
        try:
            if method == "GET":
                return self._read(action, query)
            if method != "POST":
                return _error(405, "control API accepts GET and POST")
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ControlError("body must be a JSON object")
            if action in ("refuse_connections", "reset"):
                return _json(await getattr(self, f"_{action}")(args))
            handler = {
                "mint": self._mint,
                "register": self._register,
                "fail": self._fail,
                "drop": self._drop,
                "latency": self._latency,
                "hang": self._hang,
                "early_hints": self._early_hints,
                "framing": self._framing,
                "rate_limit": self._rate_limit,
                "fail_origin": self._fail_origin,
            }.get(action)
            if handler is None:
                return _error(404, f"no control action POST {action}")
            return _json(handler(args))
        except (ControlError, ValueError, KeyError, TypeError) as exc:
            return _error(400, f"control API: {exc!r}")

    def _read(self, action: str, query: dict[str, list[str]]) -> Response:
        if action == "health":
            origins = [{"url": o.url, **o.misbehaviour()} for o in self.origins]
            return _json({"ok": True, "origin": self.origins[0].url, "origins": origins})
        token = query.get("token", [None])[0]
        origin = query.get("origin", [None])[0]
        origins = self.origins if origin is None else [self._origin(origin)]
        self.settle()
        if action == "messages":
            messages = self._merged(o.recorder.messages for o in origins)
            return _json({"messages": [m.to_json() for m in messages if token in (None, m.token)]})
        if action == "rejections":
            rejections = self._merged(o.recorder.rejections for o in origins)
            return _json({"rejections": [r.to_json() for r in rejections if token in (None, r.token)]})
        if action == "stats":
            if origin is not None:
                return _json(stats_json(origins[0].recorder.stats()))
            parts = {o.url: o.recorder.stats() for o in self.origins}
            by_origin = {url: stats_json(part) for url, part in parts.items()}
            return _json({**stats_json(merge_stats(list(parts.values()))), "by_origin": by_origin})
        return _error(404, f"no control action GET {action}")

    @staticmethod
    def _merged(records: Iterable[list]) -> Iterable:
        """Several origins' records back in the order they arrived in."""
        return heapq.merge(*records, key=_BY_SEQ)

    def _origin(self, value: object) -> Origin:
        """An origin named by its index (int or digits), its URL or its authority."""
        if isinstance(value, str):
            if value.isdigit():
                value = int(value)
            else:
                for origin in self.origins:
                    if value in (origin.url, origin.authority):
                        return origin
                raise ControlError(f"no origin {value!r}: there are {[o.url for o in self.origins]}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.origins):
            raise ControlError(f"origin must be an index within 0..{len(self.origins) - 1} or a URL, not {value!r}")
        return self.origins[value]

    @staticmethod
    def _flag(args: dict, name: str) -> bool:
        value = args.get(name, True)
        if not isinstance(value, bool):
            raise ControlError(f"{name} must be true or false")
        return value

    @staticmethod
    def _subscription_json(origin: Origin, subscriber: Subscriber) -> dict:
        return {
            "endpoint": f"{origin.url}/push/{subscriber.token}",
            "expirationTime": None,
            "keys": {"p256dh": b64url_encode(subscriber.keys.p256dh), "auth": b64url_encode(subscriber.keys.auth)},
        }

    def _mint(self, args: dict) -> dict:
        origin = self._origin(args.get("origin", 0))
        n = int(args["n"])
        if not 0 <= n <= MAX_MINT:
            raise ControlError(f"n must be within 0..{MAX_MINT}")
        server_key = check_point(b64url_decode(args["application_server_key"]), "application_server_key")
        minted = []
        for _ in range(n):
            subscriber = Subscriber(secrets.token_urlsafe(TOKEN_BYTES), SubscriberKeys.generate(), server_key)
            origin.subscribers[subscriber.token] = subscriber
            minted.append(self._subscription_json(origin, subscriber))
        gc.freeze()  # subscribers live until reset: keep them out of every later collection
        return {"subscriptions": minted}

    def _register(self, args: dict) -> dict:
        origin = self._origin(args.get("origin", 0))
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
        origin.subscribers[token] = subscriber
        return {"subscription": self._subscription_json(origin, subscriber)}

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
        fault.reason = _answer_text(args.get("reason") or "injected fault", "reason")
        headers = args.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > 8:
            raise ControlError("headers must be an object of at most 8 headers")
        for name in headers:
            if not _HEADER_NAME.fullmatch(str(name)):
                raise ControlError(f"not a header name: {name!r}")
        fault.headers = [(str(name), _answer_text(value, name)) for name, value in headers.items()]
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
        spread = float(args.get("spread") or 0.0)
        if not ms >= 0 or not 0 <= spread <= MAX_LATENCY_SPREAD:
            raise ControlError(f"latency must be >= 0 ms, its spread between 0 and {MAX_LATENCY_SPREAD}")
        origin = args.get("origin")
        for target in self.origins if origin is None else [self._origin(origin)]:
            target.latency_s, target.latency_spread = ms / 1000, spread
        return {}

    def _hang(self, args: dict) -> dict:
        self._origin(args["origin"]).hanging = self._flag(args, "on")
        return {}

    def _early_hints(self, args: dict) -> dict:
        self._origin(args["origin"]).early_hints = self._flag(args, "on")
        return {}

    def _framing(self, args: dict) -> dict:
        self._origin(args["origin"]).framing = check_framing(args.get("framing"))
        return {}

    def _rate_limit(self, args: dict) -> dict:
        origin = self._origin(args["origin"])
        per_second = args.get("per_second")
        if per_second is None:
            origin.throttle = None
            return {}
        retry_after = args.get("retry_after", "1")
        origin.throttle = Throttle(
            per_second, args.get("burst"), None if retry_after is None else str(retry_after), args.get("status", 429)
        )
        return {}

    def _fail_origin(self, args: dict) -> dict:
        self._origin(args["origin"]).failure = check_failure(args.get("status"))
        return {}

    async def _refuse_connections(self, args: dict) -> dict:
        origin = self._origin(args["origin"])
        await self._set_listening(origin, not self._flag(args, "on"))
        return {}

    async def _set_listening(self, origin: Origin, on: bool) -> None:
        if origin.refused != on:
            return  # already as asked
        if self.listeners is None:
            raise ControlError("no server attached: cannot open or close ports")
        try:
            await self.listeners.set_listening(origin, on)
        except OSError as exc:
            raise ControlError(f"cannot listen on {origin.url} again: {exc}") from None
        origin.refused = not on

    async def _reset(self, args: dict) -> dict:
        self.faults.clear()
        self._seen = 0
        for origin in self.origins:
            await self._set_listening(origin, True)
            origin.calm()
            origin.forget()
            if args.get("subscribers"):
                origin.subscribers.clear()
        return {}
