"""RFC 8291 encryption cross-checked against http_ece; VAPID headers cached per origin."""

from __future__ import annotations

import base64
import json
import os

import http_ece
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.helpers import TEST_SUBJECT, BrowserKeys
from workers.webpush import VapidHeaders, encrypt


def _decrypt(body: bytes, keys: BrowserKeys) -> bytes:
    return http_ece.decrypt(body, private_key=keys.private_key, auth_secret=keys.auth, version="aes128gcm")


def test_encrypt_decrypts_with_http_ece():
    keys = BrowserKeys.generate()
    for plaintext in [b"", b"hello", "walrus 🦭".encode() * 300]:
        body = encrypt(plaintext, keys.p256dh, keys.auth)
        assert _decrypt(body, keys) == plaintext


def test_encrypt_matches_http_ece_byte_for_byte():
    keys = BrowserKeys.generate()
    server_key = ec.generate_private_key(ec.SECP256R1())
    salt = os.urandom(16)
    plaintext = b'{"v":1,"title":"Walrus"}'
    ours = encrypt(plaintext, keys.p256dh, keys.auth, salt=salt, server_key=server_key)
    theirs = http_ece.encrypt(
        plaintext,
        salt=salt,
        private_key=server_key,
        dh=keys.p256dh,
        auth_secret=keys.auth,
        version="aes128gcm",
        rs=4096,
    )
    assert ours == theirs


def test_every_message_gets_a_fresh_key_and_salt():
    keys = BrowserKeys.generate()
    first, second = encrypt(b"x", keys.p256dh, keys.auth), encrypt(b"x", keys.p256dh, keys.auth)
    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # ephemeral public key


def _claims(header: str) -> tuple[dict, str]:
    token = header.split("t=")[1].split(",")[0]
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "==")), token


def test_vapid_header_signed_once_per_origin_until_near_expiry():
    now = [1_000_000.0]
    key = ec.generate_private_key(ec.SECP256R1())
    vapid = VapidHeaders(key, TEST_SUBJECT, clock=lambda: now[0])
    first = vapid.authorization("https://fcm.googleapis.com")
    assert vapid.authorization("https://fcm.googleapis.com") == first
    other = vapid.authorization("https://updates.push.services.mozilla.com")
    assert vapid.signatures == 2
    claims, token = _claims(first)
    assert claims == {"aud": "https://fcm.googleapis.com", "exp": 1_000_000 + 12 * 3600, "sub": TEST_SUBJECT}
    assert _claims(other)[0]["aud"] == "https://updates.push.services.mozilla.com"
    # the signature verifies with the public key in k=
    header_b64, payload_b64, sig_b64 = token.split(".")
    raw = base64.urlsafe_b64decode(sig_b64 + "==")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(der, f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    now[0] += 11 * 3600 + 1  # within an hour of expiry: re-signed
    renewed = vapid.authorization("https://fcm.googleapis.com")
    assert renewed != first and vapid.signatures == 3
    assert _claims(renewed)[0]["exp"] == int(now[0]) + 12 * 3600


@pytest.mark.parametrize("bad", [b"\x04" + b"\x01" * 64])
def test_encrypt_refuses_a_point_off_the_curve(bad):
    with pytest.raises(ValueError):
        encrypt(b"x", bad, os.urandom(16))
