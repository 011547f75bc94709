"""Receipts: short unforgeable tokens naming (campaign, subscription).

Minted when a message is built and echoed back by the service worker. An HMAC
with a key derived from the VAPID private key means no extra secret to
configure or store, and nothing in Redis that a reader of the database could
use to forge one.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .vapid import VapidKey

_MAC_BYTES = 12
# "<campaign id>.<subscription id in hex>.<base64url MAC of 12 bytes>", as `mint` writes it.
_TOKEN = re.compile(r"([A-Za-z0-9]{1,64})\.(0|[1-9a-f][0-9a-f]{0,15})\.([A-Za-z0-9_-]{16})", re.ASCII)


def receipt_key(vapid_key: VapidKey) -> bytes:
    secret = vapid_key.private_key.private_numbers().private_value.to_bytes(32, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"storypush receipts v1").derive(secret)


def _mac(key: bytes, campaign_id: str, subscription_id: int) -> str:
    digest = hmac.digest(key, f"{campaign_id}.{subscription_id}".encode(), "sha256")[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Receipt:
    campaign_id: str
    subscription_id: int


def mint(key: bytes, campaign_id: str, subscription_id: int) -> str:
    return f"{campaign_id}.{subscription_id:x}.{_mac(key, campaign_id, subscription_id)}"


def verify(key: bytes, token: str) -> Receipt | None:
    """The receipt `token` names, or None if it is malformed or forged.

    Only the exact form `mint` writes is read (ASCII, lowercase hex id, 16-character
    MAC), so no other spelling of a receipt verifies and no input can raise.
    """
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    campaign_id, hex_id, mac = match.groups()
    subscription_id = int(hex_id, 16)
    if not hmac.compare_digest(mac.encode(), _mac(key, campaign_id, subscription_id).encode()):
        return None
    return Receipt(campaign_id, subscription_id)
