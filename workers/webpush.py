"""The Web Push protocol pieces: RFC 8291 encryption and RFC 8292 VAPID headers.

Encryption is done with `cryptography` directly rather than `http_ece`: one
aes128gcm record with a fresh ephemeral key and salt per message is a handful
of calls, and skipping http_ece's generic record loop and key juggling halves
the per-message cost (see benchmarks/). A test cross-checks every byte against
`http_ece.decrypt`. VAPID signing uses `py_vapid`; the signed header is cached
per push-service origin because an ES256 signature per message would cost as
much as the encryption itself.
"""

from __future__ import annotations

import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from py_vapid import Vapid02

_CURVE = ec.SECP256R1()
_RECORD_SIZE = 4096
_CEK_INFO = b"Content-Encoding: aes128gcm\x00\x01"
_NONCE_INFO = b"Content-Encoding: nonce\x00\x01"
_POINT = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")  # one-shot: no HMAC object per call


def encrypt(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    salt: bytes | None = None,
    server_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """Encrypt `plaintext` for one subscriber (RFC 8291, aes128gcm, one record).

    `salt` and `server_key` are for tests only; real calls get fresh ones.
    """
    salt = salt or os.urandom(16)
    server_key = server_key or ec.generate_private_key(_CURVE)
    as_public = server_key.public_key().public_bytes(*_POINT)
    shared = server_key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, ua_public))
    # RFC 8291 §3.4: IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0 || ua || as, 32)
    prk_key = _hmac(auth_secret, shared)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    # RFC 8188 §2.2: CEK and nonce from PRK = HMAC(salt, IKM); each fits one HKDF block.
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, _CEK_INFO)[:16]
    nonce = _hmac(prk, _NONCE_INFO)[:12]
    # A single record ends with the 0x02 delimiter and needs no padding.
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    header = salt + _RECORD_SIZE.to_bytes(4, "big") + bytes([len(as_public)]) + as_public
    return header + ciphertext


@dataclass
class VapidHeaders:
    """`Authorization: vapid t=…, k=…` per push-service origin, signed once and
    reused until close to expiry.

    `clock` is injectable so tests control time instead of patching `time`. At most
    `max_origins` headers are kept (least recently used dropped): endpoints name their
    own hosts (`*.notify.windows.com`), so the set of origins is not ours to bound.
    """

    private_key: ec.EllipticCurvePrivateKey
    subject: str
    lifetime: int = 12 * 3600
    renew_before: int = 3600
    clock: Callable[[], float] = time.time
    max_origins: int = 1024
    _cache: OrderedDict[str, tuple[str, float]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._vapid = Vapid02(private_key=self.private_key)
        self.signatures = 0

    def authorization(self, origin: str) -> str:
        now = self.clock()
        cached = self._cache.get(origin)
        if cached is not None and cached[1] - now > self.renew_before:
            self._cache.move_to_end(origin)
            return cached[0]
        expires = int(now) + self.lifetime
        # A fresh claims dict per origin: never reuse (pywebpush mutates its caller's).
        claims = {"aud": origin, "exp": expires, "sub": self.subject}
        header = self._vapid.sign(claims)["Authorization"]
        self._cache[origin] = (header, expires)
        self._cache.move_to_end(origin)
        if len(self._cache) > self.max_origins:
            self._cache.popitem(last=False)
        self.signatures += 1
        return header
