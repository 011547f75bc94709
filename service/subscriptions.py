"""What a subscription is, and its compact byte form in Redis.

Plain Python: validation and packing are tested without Flask or Redis.
A packed record is ~235 bytes for a typical FCM endpoint: the keys are stored
raw (81 bytes instead of 110 base64 characters), well-known endpoint prefixes as
one byte, and the base64url token that ends most endpoints as the bytes it
spells (6 bits a character). That keeps a record inside Redis's 256-byte
allocation class and a subscriber with its indexes under 400 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from dataclasses import dataclass, field

# Append-only: a record stores the index of its prefix, so never reorder or remove.
ENDPOINT_PREFIXES: tuple[str, ...] = (
    "",
    "https://fcm.googleapis.com/fcm/send/",
    "https://fcm.googleapis.com/wp/",
    "https://updates.push.services.mozilla.com/wpush/v2/",
    "https://updates.push.services.mozilla.com/wpush/v1/",
    "https://web.push.apple.com/",
    "https://wns2-",
)

_FORMAT_VERSION = 1
_HEAD = struct.Struct(">BB65s16sIH")  # version, prefix, p256dh, auth, updated_at, endpoint length
# Prefix byte flag: the endpoint's rest is base64url characters (with at most one
# ':' as in FCM's "<instance>:<token>") stored as the bytes they decode to.
_PACKED_TOKEN = 0x80
_TOKEN_HEAD = struct.Struct(">HH")  # characters, position of ':' (0xFFFF: none)
_NO_COLON = 0xFFFF
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Subscription:
    endpoint: str
    p256dh: bytes
    auth: bytes
    topics: tuple[str, ...] = ()
    locale: str | None = None
    timezone: str | None = None
    updated_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def endpoint_digest(self) -> bytes:
        return endpoint_digest(self.endpoint)

    def with_endpoint(self, endpoint: str, p256dh: bytes, auth: bytes) -> Subscription:
        """The same reader's settings on a rotated browser subscription."""
        return Subscription(endpoint, p256dh, auth, self.topics, self.locale, self.timezone)


def endpoint_digest(endpoint: str) -> bytes:
    """12 bytes of SHA-256: the endpoint's identity in indexes and logs (never the URL)."""
    return hashlib.sha256(endpoint.encode()).digest()[:12]


def _short(text: str | None) -> bytes:
    data = (text or "").encode()
    if len(data) > 255:
        raise ValueError("field too long to pack")
    return bytes([len(data)]) + data


def _pack_rest(rest: str) -> tuple[int, bytes]:
    """(flag, stored bytes) for what follows the endpoint's known prefix."""
    head, colon, tail = rest.partition(":")
    token = head + tail
    if len(token) < 8 or len(rest) > 0xFFFE or not _BASE64URL.match(token) or ":" in tail:
        return 0, rest.encode()
    raw = base64.urlsafe_b64decode(token + "A" * (-len(token) % 4))
    position = len(head) if colon else _NO_COLON
    return _PACKED_TOKEN, _TOKEN_HEAD.pack(len(token), position) + raw


def _unpack_rest(flag: int, data: bytes) -> str:
    if not flag:
        return data.decode()
    length, position = _TOKEN_HEAD.unpack_from(data)
    # Whole 4-character groups round-trip exactly; the 'A' fill is cut off again.
    token = base64.urlsafe_b64encode(data[_TOKEN_HEAD.size :]).decode()[:length]
    return token if position == _NO_COLON else f"{token[:position]}:{token[position:]}"


def pack(subscription: Subscription) -> bytes:
    endpoint = subscription.endpoint
    code = max(
        (i for i, prefix in enumerate(ENDPOINT_PREFIXES) if endpoint.startswith(prefix)),
        key=lambda i: len(ENDPOINT_PREFIXES[i]),
    )
    flag, rest = _pack_rest(endpoint[len(ENDPOINT_PREFIXES[code]) :])
    code |= flag
    head = _HEAD.pack(_FORMAT_VERSION, code, subscription.p256dh, subscription.auth, subscription.updated_at, len(rest))
    return (
        head
        + rest
        + _short(",".join(subscription.topics))
        + _short(subscription.locale)
        + _short(subscription.timezone)
    )


def unpack(data: bytes) -> Subscription:
    version, code, p256dh, auth, updated_at, length = _HEAD.unpack_from(data)
    if version != _FORMAT_VERSION:
        raise ValueError(f"unknown subscription record version {version}")
    offset = _HEAD.size
    prefix = ENDPOINT_PREFIXES[code & ~_PACKED_TOKEN]
    endpoint = prefix + _unpack_rest(code & _PACKED_TOKEN, data[offset : offset + length])
    offset += length
    strings: list[str] = []
    for _ in range(3):
        size = data[offset]
        strings.append(data[offset + 1 : offset + 1 + size].decode())
        offset += 1 + size
    topics, locale, timezone = strings
    return Subscription(
        endpoint=endpoint,
        p256dh=p256dh,
        auth=auth,
        topics=tuple(t for t in topics.split(",") if t),
        locale=locale or None,
        timezone=timezone or None,
        updated_at=updated_at,
    )
