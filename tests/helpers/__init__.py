"""What several tests share (test modules never import each other): here, test data with
real P-256 subscriber keys, so every payload can be decrypted; beside it `cms` (signed
webhook calls), `fanout` (subscribers in, jobs run in-process), `processes` (storypush as
real processes), `admin` (operator fixtures), `jobs` (RQ jobs for tests), `push_sender` (pywebpush
against the simulator) and `browser`."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.vapid import b64url

TEST_SUBJECT = "mailto:ops@publisher.example.org"


def inside_one_minute() -> None:
    """Rate-limit windows are calendar minutes: start a test that counts requests against
    one well inside it, so no count it makes is split across two (such a test takes well
    under a second)."""
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)


@dataclass
class BrowserKeys:
    """What a browser keeps for one subscription: the private key and auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def generate(cls) -> BrowserKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @property
    def p256dh(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def subscription_json(self, endpoint: str) -> dict:
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(self.p256dh), "auth": b64url(self.auth)},
        }


def fcm_endpoint() -> str:
    return "https://fcm.googleapis.com/fcm/send/" + secrets.token_urlsafe(110)


def subscribe_body(endpoint: str | None = None, topics: list[str] | None = None, **extra) -> dict:
    keys = BrowserKeys.generate()
    return {
        "subscription": keys.subscription_json(endpoint or fcm_endpoint()),
        "topics": topics or ["animals"],
        **extra,
    }


def kill_embedded_redis(data_dir: Path) -> None:
    """Kill the redis-server a data dir's pid file names, if it still is one (test cleanup)."""
    import psutil

    try:
        proc = psutil.Process(int((data_dir / "redis" / "redis.pid").read_text()))
        if "redis-server" in proc.name():
            proc.kill()
    except (OSError, ValueError, psutil.NoSuchProcess):
        pass
