"""Shared pieces of the benchmarks: realistic endpoints, a private Redis, printing."""

from __future__ import annotations

import random
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from service.embedded_redis import ensure_embedded_redis
from service.subscriptions import Subscription
from service.vapid import b64url_decode

_TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


def subscription_of(minted: dict, topics: tuple[str, ...] = ()) -> Subscription:
    """A browser's `PushSubscription.toJSON()` (as the simulator mints them) as stored."""
    keys = minted["keys"]
    return Subscription(minted["endpoint"], b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]), topics)


# The README's example story, as the CMS sends it: what the benchmarks publish
# and the tests' usual story.
WALRUS_STORY = {
    "id": "walrus-our-planet",
    "title": "Viewers Are Being Broken By The Walrus Scene From Netflix's Our Planet",
    "body": "The director said it was 'the hardest thing I've ever had to film'.",
    "url": "https://publisher.example/news/walrus-our-planet",
    "image": "https://publisher.example/img/walrus.jpg",
    "topics": ["animals", "tv-and-film"],
    "send_at": None,
    "ttl": 14400,
    "urgency": "normal",
}

# The browser mix of a European news site; lengths are those of real endpoints
# (FCM registration tokens are 152 characters, "<11>:APA91b<134>").
PUSH_SERVICE_MIX: tuple[tuple[str, float], ...] = (("fcm", 0.70), ("mozilla", 0.20), ("apple", 0.10))
LOCALES: tuple[tuple[str, str], ...] = (
    ("en-GB", "Europe/London"),
    ("en-US", "America/New_York"),
    ("de-DE", "Europe/Berlin"),
    ("fr-FR", "Europe/Paris"),
    ("es-ES", "Europe/Madrid"),
    ("en-AU", "Australia/Sydney"),
)


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_TOKEN_CHARS, k=length))


def realistic_endpoint(rng: random.Random) -> str:
    """One endpoint drawn from `PUSH_SERVICE_MIX`, as long as the real thing."""
    kind = rng.choices([k for k, _ in PUSH_SERVICE_MIX], weights=[w for _, w in PUSH_SERVICE_MIX])[0]
    if kind == "fcm":
        return f"https://fcm.googleapis.com/fcm/send/{_token(rng, 11)}:APA91b{_token(rng, 134)}"
    if kind == "mozilla":
        return f"https://updates.push.services.mozilla.com/wpush/v2/gAAAAAB{_token(rng, 133)}"
    return f"https://web.push.apple.com/Q{_token(rng, 119)}"


@contextmanager
def private_redis(redis_url: str | None) -> Iterator[redis.Redis]:
    """A client on `redis_url` (which must hold an empty database), else on a fresh
    embedded server in a temp dir that is stopped and removed afterwards."""
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        if client.dbsize():
            raise SystemExit(f"{redis_url} is not empty; give an empty database (benchmarks never flush yours)")
        try:
            yield client
        finally:
            client.close()
        return
    with tempfile.TemporaryDirectory(prefix="storypush-bench-") as tmp:
        server = ensure_embedded_redis(Path(tmp))
        client = redis.Redis.from_url(server.url)
        try:
            yield client
        finally:
            client.close()
            server.stop()


def fmt_bytes(value: float) -> str:
    return f"{value:,.0f} B" if value < 10_000 else f"{value / 1024 / 1024:,.1f} MiB"
