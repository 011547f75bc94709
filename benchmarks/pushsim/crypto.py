"""Key handling, VAPID (RFC 8292) verification and aes128gcm (RFC 8291) decryption.

Everything a push service or a browser does with keys lives here, free of I/O, so the
server stays a thin HTTP layer and the tests can call these checks directly.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# RFC 8292 §2: a JWT must not be valid for more than 24 hours from the time of the request.
MAX_JWT_LIFETIME_S = 24 * 60 * 60
# Bound on cached JWTs: a sender reuses one per origin, so this only matters for abuse.
_JWT_CACHE_LIMIT = 4096

_CURVE = ec.SECP256R1()
_VAPID_PARAM = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^,\s]+)\s*")
# RFC 8188 §2.1 header: salt(16) || rs(4) || idlen(1) || keyid(idlen); RFC 8291 §4 puts the
# sender's 65-byte uncompressed P-256 point in keyid.
_HEADER_LEN = 16 + 4 + 1
_POINT_LEN = 65
_TAG_LEN = 16


class VapidError(Exception):
    """The request's VAPID authorization is unacceptable; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class DecryptError(Exception):
    """The body is not a valid RFC 8291 aes128gcm message for this subscriber."""


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as Web Push and JOSE spell binary values."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url, tolerating missing or present padding (senders differ)."""
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed point, the form `p256dh` and VAPID `k` use."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_private_key(data: bytes | str) -> ec.EllipticCurvePrivateKey:
    """Load a subscriber key given as PEM (text or bytes) or as the raw 32-byte scalar.

    Decided once at registration so request handling never guesses a key's format.
    """
    if isinstance(data, str):
        data = data.encode("ascii")
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
    elif len(data) == 32:
        key = ec.derive_private_key(int.from_bytes(data, "big"), _CURVE)
    else:
        raise ValueError("private key must be PEM or a raw 32-byte P-256 scalar")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("private key must be a P-256 key")
    return key


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """PKCS#8 PEM text, the form keys travel in over the control API."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def check_point(point: bytes, what: str) -> bytes:
    """Reject anything that is not an uncompressed P-256 point on the curve."""
    if len(point) != _POINT_LEN or point[0] != 4:
        raise ValueError(f"{what} must be a 65-byte uncompressed P-256 point")
    ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, point)
    return point


@dataclass(frozen=True, slots=True)
class SubscriberKeys:
    """What a browser keeps for one subscription."""

    private_key: ec.EllipticCurvePrivateKey
    p256dh: bytes
    auth: bytes

    @classmethod
    def generate(cls) -> SubscriberKeys:
        key = ec.generate_private_key(_CURVE)
        return cls(key, public_bytes(key), os.urandom(16))


def parse_vapid_header(value: str) -> tuple[str, str]:
    """Split `vapid t=<JWT>, k=<key>` (RFC 8292 §3) into the JWT and the key text."""
    scheme, _, params = value.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError(401, f"authorization scheme must be 'vapid', not {scheme[:16]!r}")
    found: dict[str, str] = {}
    for part in params.split(","):
        match = _VAPID_PARAM.fullmatch(part)
        if not match:
            raise VapidError(401, "malformed vapid authorization parameters")
        found[match.group(1).lower()] = match.group(2)
    if "t" not in found or "k" not in found:
        raise VapidError(401, "vapid authorization needs both t= and k=")
    return found["t"], found["k"]


def verify_jwt_signature(token: str, public_key: bytes) -> dict:
    """Check an ES256 JWT's header and signature against `public_key`; return its claims.

    Args:
        token: the compact JWS from `t=`.
        public_key: the 65-byte point from `k=`.

    Raises:
        VapidError: malformed token, wrong algorithm or a signature that does not verify.
    """
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, binascii.Error) as exc:
        raise VapidError(401, f"malformed JWT: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise VapidError(401, "JWT alg must be ES256")
    if not isinstance(claims, dict):
        raise VapidError(401, "JWT claims must be a JSON object")
    # RFC 7515 §A.3: ES256 signatures are raw r||s, 32 bytes each, not DER.
    if len(signature) != 64:
        raise VapidError(401, f"ES256 signature must be 64 raw bytes, got {len(signature)}")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, public_key)
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        key.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidError(401, "JWT signature does not verify with k") from None
    except ValueError as exc:
        raise VapidError(401, f"k is not a P-256 public key: {exc}") from None
    return claims


def check_claims(claims: dict, audience: str, now: float) -> None:
    """RFC 8292 §2 claim rules: exact `aud`, `exp` in (now, now + 24 h], a contact `sub`."""
    if claims.get("aud") != audience:
        raise VapidError(401, f"JWT aud {claims.get('aud')!r} is not the push origin {audience!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise VapidError(401, "JWT exp must be an integer")
    if exp <= now:
        raise VapidError(401, "JWT has expired")
    if exp > now + MAX_JWT_LIFETIME_S:
        raise VapidError(401, "JWT exp is more than 24 hours ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise VapidError(401, "JWT sub must be a mailto: or https: contact")


class JwtVerifier:
    """Verifies VAPID headers, caching the parsing and signature check per header value.

    A sender signs one JWT per origin and reuses it for hours; an ECDSA verify costs
    ~130 µs here, more than the rest of a request, so only the key match and the claims
    (which depend on the clock) are re-checked on every request.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[bytes, dict | VapidError]] = {}

    def verify(self, authorization: str, expected_key: bytes, audience: str, now: float) -> dict:
        """Return the JWT claims, or raise VapidError with the status to answer.

        `k` must be the applicationServerKey the subscription was made with (403 if not,
        as FCM answers for a key mismatch).
        """
        cached = self._cache.get(authorization)
        if cached is None:
            cached = self._check(authorization)
            if len(self._cache) >= _JWT_CACHE_LIMIT:
                self._cache.clear()
            self._cache[authorization] = cached
        key, result = cached
        if isinstance(result, VapidError):
            raise result
        if key != expected_key:
            raise VapidError(403, "k does not match the subscription's applicationServerKey")
        check_claims(result, audience, now)
        return result

    @staticmethod
    def _check(authorization: str) -> tuple[bytes, dict | VapidError]:
        try:
            token, key_text = parse_vapid_header(authorization)
            try:
                key = b64url_decode(key_text)
            except (ValueError, binascii.Error):
                raise VapidError(401, "k is not base64url") from None
            return key, verify_jwt_signature(token, key)
        except VapidError as exc:
            return b"", exc


def check_aes128gcm_header(body: bytes) -> None:
    """Cheap structural check of an aes128gcm body, done even when decryption is sampled."""
    if len(body) < _HEADER_LEN + _POINT_LEN + _TAG_LEN + 1:
        raise DecryptError("body too short for an aes128gcm message")
    rs = struct.unpack_from("!L", body, 16)[0]
    if rs < 18:
        raise DecryptError(f"record size {rs} too small")
    if body[20] != _POINT_LEN or body[21] != 4:
        raise DecryptError("keyid must hold the sender's 65-byte uncompressed public key")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def decrypt(body: bytes, keys: SubscriberKeys) -> bytes:
    """Decrypt an RFC 8291 aes128gcm body as the browser would.

    Written against the RFC rather than calling `http_ece.decrypt` because that costs
    ~250 µs per message here against ~150 µs, and the simulator must keep up with a
    benchmark; the tests prove both agree.

    Raises:
        DecryptError: bad header, wrong keys, tampered records or bad padding.
    """
    check_aes128gcm_header(body)
    salt = body[:16]
    rs = struct.unpack_from("!L", body, 16)[0]
    sender = body[_HEADER_LEN : _HEADER_LEN + _POINT_LEN]
    ciphertext = body[_HEADER_LEN + _POINT_LEN :]
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, sender)
        shared = keys.private_key.exchange(ec.ECDH(), peer)
    except ValueError as exc:
        raise DecryptError(f"sender key in keyid is invalid: {exc}") from None
    # RFC 8291 §3.4 key derivation, then RFC 8188 §2.2/§2.3 CEK and nonce.
    ikm = _hmac(_hmac(keys.auth, shared), b"WebPush: info\x00" + keys.p256dh + sender + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    base_nonce = int.from_bytes(_hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12], "big")
    aead = AESGCM(cek)
    plaintext = bytearray()
    records = [ciphertext[i : i + rs] for i in range(0, len(ciphertext), rs)]
    for seq, record in enumerate(records):
        if len(record) <= _TAG_LEN:
            raise DecryptError("truncated record")
        nonce = (base_nonce ^ seq).to_bytes(12, "big")
        try:
            padded = aead.decrypt(nonce, record, None)
        except InvalidTag:
            raise DecryptError("authentication tag does not match (wrong keys or tampered body)") from None
        data = padded.rstrip(b"\x00")
        last = seq == len(records) - 1
        if not data or data[-1] != (2 if last else 1):
            raise DecryptError("bad record padding delimiter")
        plaintext += data[:-1]
    return bytes(plaintext)
