"""A small autopush: Firefox's push WebSocket on ws://127.0.0.1 and RFC 8030 on https://127.0.0.1.

Firefox (`dom/push/PushServiceWebSocket.sys.mjs`, sub-protocol "push-notification") sends

    {"messageType": "hello", "use_webpush": true, "broadcasts": {...}, "uaid"?: "..."}
    {"messageType": "register", "channelID": "<uuid>", "key": "<base64url, padded>"}
    {"messageType": "unregister", "channelID": "<uuid>", "code": 200}
    {"messageType": "ack", "updates": [{"channelID": ..., "version": ..., "code": 100}]}
    {"messageType": "nack", "version": ..., "code": 301}
    {}                                                        (a ping: answered with {})

and this server answers `hello` (status 200, a UAID, use_webpush), `register` (status 200
and `pushEndpoint` = https://127.0.0.1:<port>/wpush/<channelID>) and `unregister`.

`POST /wpush/<channelID>` checks what a real push service checks (`Content-Encoding:
aes128gcm`, a `TTL`, a VAPID `Authorization: vapid t=<JWT>, k=<key>` whose signature
verifies, whose `aud` is this origin, whose `exp` lies within 24 h, and whose `k` is the
key the channel was registered with), forwards the body as a `notification` and answers
201. Ack codes: 100 delivered (decrypted and handed to the service worker), 101 decryption
error, 102 not delivered.

Everything runs on one asyncio loop in a daemon thread; what happened is recorded in
thread-safe lists the test reads (`hellos`, `registrations`, `pushes`, `acks`, `nacks`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import WSMsgType, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

HOST = "127.0.0.1"
MAX_BODY = 4096  # autopush's limit on an encrypted payload


def b64url_decode(text: str) -> bytes:
    text = text.strip().rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class VapidError(ValueError):
    pass


def verify_vapid(authorization: str, audience: str, now: float | None = None) -> tuple[bytes, dict]:
    """Check `vapid t=<JWT>, k=<key>` (RFC 8292); return (raw public key, JWT claims)."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError(f"scheme {scheme!r} is not vapid")
    fields = {}
    for part in params.split(","):
        name, _, value = part.strip().partition("=")
        fields[name.strip().lower()] = value.strip()
    if "t" not in fields or "k" not in fields:
        raise VapidError("t= or k= missing")
    key = b64url_decode(fields["k"])
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    except ValueError as exc:
        raise VapidError("k is not a P-256 point") from exc
    try:
        header_b64, claims_b64, signature_b64 = fields["t"].split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise VapidError("t is not a JWT") from exc
    if header.get("alg") != "ES256" or len(signature) != 64:
        raise VapidError(f"JWT is not ES256: {header}")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VapidError("JWT signature does not verify with k") from exc
    now = time.time() if now is None else now
    if claims.get("aud") != audience:
        raise VapidError(f"aud {claims.get('aud')!r} is not {audience!r}")
    if not isinstance(claims.get("exp"), int) or not now < claims["exp"] <= now + 24 * 3600:
        raise VapidError(f"exp {claims.get('exp')!r} is not within 24 hours")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise VapidError(f"sub {claims.get('sub')!r} is neither mailto: nor https:")
    return key, claims


@dataclass
class Push:
    """One accepted POST, as forwarded to the browser."""

    channel: str
    version: str
    headers: dict[str, str]
    body: bytes
    claims: dict
    received_at: float = field(default_factory=time.time)


class AutopushServer:
    """`with AutopushServer(tmp_dir) as push:` → `push.ws_url`, `push.origin`, `push.ca_file`."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.ca_file = str(self.state_dir / "autopush-ca.pem")
        self.ws_url = ""
        self.origin = ""
        self.hellos: list[dict] = []
        self.registrations: dict[str, bytes | None] = {}
        self.unregistered: list[str] = []
        self.pushes: list[Push] = []
        self.refused: list[tuple[int, str]] = []
        self.acks: list[dict] = []
        self.nacks: list[dict] = []
        self.messages: list[dict] = []  # everything Firefox sent, in order
        self._changed = threading.Condition()
        self._client: web.WebSocketResponse | None = None
        self._undelivered: list[dict] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AutopushServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(self.ca_file)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST).configure_cert(tls)
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._serve(tls))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            loop.close()

        self._thread = threading.Thread(target=run, name="autopush", daemon=True)
        self._thread.start()
        if not started.wait(15) or failure:
            raise RuntimeError(f"autopush did not start: {failure}")

    async def _serve(self, tls: ssl.SSLContext) -> None:
        app = web.Application(client_max_size=MAX_BODY * 4)
        app.router.add_get("/", self._websocket)
        app.router.add_post("/wpush/{channel}", self._push)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        ws_site = web.TCPSite(self._runner, HOST, 0)
        https_site = web.TCPSite(self._runner, HOST, 0, ssl_context=tls)
        await ws_site.start()
        await https_site.start()
        self.ws_url = f"ws://{HOST}:{ws_site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
        self.origin = f"https://{HOST}:{https_site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    @property
    def authority(self) -> str:
        """`127.0.0.1:<https port>`, for STORYPUSH_PUSH_HOSTS."""
        return self.origin.removeprefix("https://")

    # -- recording -----------------------------------------------------------------------------

    def _record(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Block until `condition()` is truthy (checked on every change), else AssertionError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (result := condition()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"autopush: timed out after {timeout:.0f}s waiting for {what}")
                self._changed.wait(min(left, 0.5))
            return result

    # -- the WebSocket side (Firefox) ----------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("push-notification",), autoping=True)
        await ws.prepare(request)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                message = json.loads(frame.data)
            except ValueError:
                continue
            self._record(lambda message=message: self.messages.append(message))
            reply = self._answer(ws, message)
            if reply is not None:
                await ws.send_str(json.dumps(reply))
            if message.get("messageType") == "hello":
                await self._flush()
        if self._client is ws:
            self._client = None
        return ws

    def _answer(self, ws: web.WebSocketResponse, message: dict) -> dict | None:
        kind = message.get("messageType")
        if not message or kind == "ping":
            return {}
        if kind == "hello":
            uaid = message.get("uaid") or uuid.uuid4().hex
            self._client = ws
            self._record(lambda: self.hellos.append(message))
            return {"messageType": "hello", "status": 200, "uaid": uaid, "use_webpush": True}
        if kind == "register":
            channel = str(message.get("channelID", ""))
            key = b64url_decode(message["key"]) if message.get("key") else None
            self._record(lambda: self.registrations.__setitem__(channel, key))
            return {
                "messageType": "register",
                "status": 200,
                "channelID": channel,
                "pushEndpoint": f"{self.origin}/wpush/{channel}",
            }
        if kind == "unregister":
            channel = str(message.get("channelID", ""))

            def forget() -> None:
                self.registrations.pop(channel, None)
                self.unregistered.append(channel)

            self._record(forget)
            return {"messageType": "unregister", "status": 200, "channelID": channel}
        if kind == "ack":
            self._record(lambda: self.acks.extend(message.get("updates") or []))
        elif kind == "nack":
            self._record(lambda: self.nacks.append(message))
        return None  # broadcast_subscribe and anything else: nothing to say

    async def _flush(self) -> None:
        client = self._client
        while client is not None and self._undelivered:
            await client.send_str(json.dumps(self._undelivered.pop(0)))

    # -- the RFC 8030 side (application servers) -----------------------------------------------

    def _refuse(self, status: int, reason: str) -> web.Response:
        self._record(lambda: self.refused.append((status, reason)))
        return web.json_response({"code": status, "errno": 0, "error": reason}, status=status)

    async def _push(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if channel not in self.registrations:
            return self._refuse(410, "no such subscription")
        if request.headers.get("Content-Encoding", "").lower() != "aes128gcm":
            return self._refuse(400, f"Content-Encoding {request.headers.get('Content-Encoding')!r}")
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            return self._refuse(400, f"TTL {ttl!r}")
        try:
            key, claims = verify_vapid(request.headers.get("Authorization", ""), self.origin)
        except VapidError as exc:
            return self._refuse(401, str(exc))
        if self.registrations[channel] is not None and key != self.registrations[channel]:
            return self._refuse(403, "k is not the applicationServerKey of this subscription")
        body = await request.read()
        if not body or len(body) > MAX_BODY:
            return self._refuse(413 if body else 400, f"body of {len(body)} bytes")
        version = uuid.uuid4().hex
        push = Push(channel, version, dict(request.headers), body, claims)
        self._record(lambda: self.pushes.append(push))
        self._undelivered.append(
            {
                "messageType": "notification",
                "channelID": channel,
                "version": version,
                "data": b64url(body),
                "headers": {"encoding": "aes128gcm"},
            }
        )
        with contextlib.suppress(ConnectionError):
            await self._flush()
        return web.Response(status=201, headers={"Location": f"{self.origin}/m/{version}", "TTL": ttl})
